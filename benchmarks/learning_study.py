"""Methods against each other at equal env steps, over seeds: issue 15's MB-MIX study and issue 18's
adaptive horizons, on the cloth (``--suite cloth``) or on Brax hopper at a CPU size (``--suite hopper``).

Each variant is a shipped recipe plus ``--set`` overrides. Every run of a suite spends the same env-step
budget (``run.env_steps``: the cloth 40 × 16 steps × 8 envs = 5 120, hopper 100 × 16 × 16 = 25 600) and is
evaluated at the same env-step multiples (``run.eval_every_env_steps``: four evaluations unless ``--evals``)
on the same episodes (cloth 32, hopper 16), so a variant whose window length changes (``ahac``, ``agree``,
``@H<n>``) spends what a fixed-H one does. A run's score is the mean of its evaluations from half the budget on
(of four: the last 3); a variant's score is
the IQM over seeds with a 95 % stratified-bootstrap interval (``mb.summarize_scores``). Wall time and the
simulator work each run did (``sim/steps`` forward steps, ``sim/vjps`` vector-Jacobian products, probes
included) are reported beside it, as ratios to SHAC's, so methods compare at equal simulator cost too.

Runs are interleaved (seed-major) so every variant sees the same machine load; each run uses one torch
thread; ``--jobs`` runs go at once. Finished runs are reused (delete ``--root`` to start over).

    python benchmarks/learning_study.py --seeds 10 --variants shac mix mbmix
    python benchmarks/learning_study.py --seeds 5 --variants mse random_probes critic_on_model beta1 blend
    python benchmarks/learning_study.py --seeds 5 --variants shac@H8 shac@H64 mix@lam0.8@int2
    python benchmarks/learning_study.py --seeds 10 --variants shac ahac agree
    python benchmarks/learning_study.py --suite hopper --seeds 5 --variants shac mix mbmix ahac agree
    python benchmarks/learning_study.py --seeds 10 --horizons 64 16 32 --variants shac beta1_room mbmix_room \
        --evals 10 --pairs mbmix_room:beta1_room --target shac@H16 --figure benchmarks/cloth_study_room_h.png

``--horizons`` runs every variant at each window length; ``--evals`` sets the points of each run's learning
curve (the score stays the mean of the evaluations from half the budget on); the report adds, per window
length, paired differences on the same seeds (``--pairs``), the IQM curve of every variant with its intervals,
and the env steps each variant's IQM curve needs to reach ``--target``'s final-evaluation IQM.
``--report-only`` reports the finished runs without training (a study cut short still reports what finished).

A variant may carry settings after ``@``: ``H<n>`` sets the (first) window length, ``lam<x>`` and ``int<n>``
the mix estimator's λ and interval. (Until commit d2fbd9d this script was ``cloth_mbmix_study.py``, where
``@H<n>`` set ``run.iterations = 640 / n`` for the same equal env steps.)
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # study_jobs, a sibling module
from study_jobs import finished, run_jobs  # noqa: E402
from study_jobs import train as train_run  # noqa: E402

ROOM = ["scheduler.warmup_env_steps=1280", "scheduler.model_error_gate=1e9", "scheduler.model_fit_steps=0",
        "scheduler.model_fit_per_transition=8.0"]
"""The world model with room to act on the cloth: a quarter of the 5 120-step budget as warm-up, no gate, and a
fit budget in units of data only (8 minibatch rows per new transition), so warm-up and fitting do not shrink
when the window grows. At H = 16 this is the 8 fit steps per iteration it always was (until 2026-12-07 it was
4 fixed steps + 4 per 128 transitions, which at H = 64 gave 200 fit steps a run instead of 320)."""

# Cloth: the shipped recipes as they are.
CLOTH: dict[str, tuple[str, list[str]]] = {
    "shac": ("recipes/cloth_shac.toml", []),
    "mix": ("recipes/cloth_shac.toml", ['estimator.kind="mix"', "estimator.lam=0.9"]),
    "mbmix": ("recipes/cloth_mix.toml", []),
    # ablations of MB-MIX, one setting each
    "mse": ("recipes/cloth_mix.toml", ["world_model.alpha_s=0.0", "world_model.alpha_a=0.0"]),
    "random_probes": ("recipes/cloth_mix.toml", ['world_model.probe_source="random"', "world_model.probes=1"]),
    "critic_on_model": ("recipes/cloth_mix.toml", ["critic.model_branch_steps=16"]),
    "beta1": ("recipes/cloth_mix.toml", ["scheduler.env_weight=1.0"]),
    "blend": ("recipes/cloth_mix.toml", ["scheduler.jacobian_blend=0.5"]),
    "no_gate": ("recipes/cloth_mix.toml", ["scheduler.model_error_gate=1e9"]),
    "long_branches": ("recipes/cloth_mix.toml", ["scheduler.model_horizon=16"]),
    "particle": ("recipes/cloth_mbmix_particle.toml", []),
    # a model with room to act: used from a quarter of the budget on (warm-up in env steps), no gate, a
    # fit budget per new transition (8 rows each: 128 transitions / 128 per batch -> 8 steps per iteration)
    "mbmix_room": ("recipes/cloth_mix.toml", ROOM),
    "blend_room": ("recipes/cloth_mix.toml", [*ROOM, "scheduler.jacobian_blend=0.5", "scheduler.env_weight=1.0"]),
    "beta1_room": ("recipes/cloth_mix.toml", [*ROOM, "scheduler.env_weight=1.0"]),
    # adaptive horizons (issue 18)
    "ahac": ("recipes/cloth_ahac.toml", []),
    "ahac_shorten": ("recipes/cloth_ahac.toml", ['scheduler.horizon_direction="shorten_when_stiff"']),
    "agree": ("recipes/cloth_agree.toml", []),
}

# Hopper at a CPU size: the GPU recipes with 16 envs and 16-step windows; MB-MIX takes cloth_mix.toml's
# model, branch and fit settings unchanged (not tuned on hopper); the adaptive schedulers their cloth
# settings with AHAC's threshold rescaled to hopper (see HOPPER_CONTACT_THRESHOLD).
HOPPER_CPU = ["env.num_envs=16", "run.eval_envs=16", "estimator.horizon=16"]
HOPPER_CONTACT_THRESHOLD = 12.0
"""AHAC's C for hopper, rescaled by recipes/cloth_ahac.toml's rule: 0.57 of the body's reading near rest. Hopper
reads 19–25 (kg·m/s² over the 1 m/s² floor: about m·g) in windows where it stands or falls slowly, 67–99 when it
lands (commit 8 steps, measured at the start of training), so C = 0.57 × 21 ≈ 12."""
HOPPER_DUAL_LR = 0.065
"""AHAC's 5e-4 × sqrt(500 / C) (the same pace for the rescaled c - C) × 2000 / 100 (AHAC's epochs compressed
into this budget's ~100 iterations), as recipes/cloth_ahac.toml derives its 0.95."""
HOPPER_MBMIX = [
    *HOPPER_CPU, "estimator.lam=0.9", "world_model.hidden=[256, 256]", "world_model.batch_size=128",
    'world_model.probe_source="adjoint"', "world_model.buffer_capacity=10000", "scheduler.model_branches=16",
    "scheduler.model_fit_steps=4", "scheduler.warmup_iterations=5", "scheduler.model_horizon=4",
    "scheduler.model_error_gate=0.8"]
"""MB-MIX on hopper: cloth_mix.toml's model, branch and fit settings at hopper's CPU size."""
HOPPER: dict[str, tuple[str, list[str]]] = {
    "shac": ("recipes/hopper_shac.toml", HOPPER_CPU),
    "mix": ("recipes/hopper_shac.toml", [*HOPPER_CPU, 'estimator.kind="mix"', "estimator.lam=0.9"]),
    "mbmix": ("recipes/hopper_mbmix.toml", HOPPER_MBMIX),
    # MB-MIX's model fitted, never used: what the model contributes
    "beta1": ("recipes/hopper_mbmix.toml", [*HOPPER_MBMIX, "scheduler.env_weight=1.0"]),
    "ahac": ("recipes/hopper_shac.toml", [
        *HOPPER_CPU, 'scheduler.kind="ahac"', "scheduler.min_horizon=8", "scheduler.max_horizon=32",
        f"scheduler.contact_threshold={HOPPER_CONTACT_THRESHOLD}", f"scheduler.dual_lr={HOPPER_DUAL_LR}",
        'scheduler.horizon_direction="diffrl"']),
    "agree": ("recipes/hopper_shac.toml", [
        *HOPPER_CPU, 'scheduler.kind="agree"', "scheduler.min_horizon=2", "scheduler.max_horizon=32",
        "scheduler.initial_horizon=8"]),
}

SUITES = {"cloth": (CLOTH, 5_120), "hopper": (HOPPER, 25_600)}
"""Each suite's variants and its env-step budget (all envs counted)."""


def settings(variant: str, suite: str = "cloth", evals: int = 4) -> tuple[str, list[str]]:
    """The recipe and ``--set`` overrides of ``variant`` (``base@H32@lam0.9@int2``: see the docstring), evaluated
    ``evals`` times at equal env-step intervals (and once before training)."""
    variants, budget = SUITES[suite]
    base, *extras = variant.split("@")
    if base not in variants:
        raise SystemExit(f"unknown variant {base!r} in suite {suite}; choose from {sorted(variants)}")
    recipe, sets = variants[base]
    sets = [*sets, f"run.env_steps={budget}", "run.iterations=100000", "run.eval_every=0",
            f"run.eval_every_env_steps={budget // evals}", "run.checkpoint_every=100000"]
    for extra in extras:
        if extra.startswith("H"):
            sets.append(f"estimator.horizon={int(extra[1:])}")
        elif extra.startswith("lam"):
            sets.append(f"estimator.lam={float(extra[3:])}")
        elif extra.startswith("int"):
            sets.append(f"estimator.interval={int(extra[3:])}")
        else:
            raise SystemExit(f"unknown variant setting {extra!r} in {variant!r}")
    return recipe, sets


def run_one(root: Path, variant: str, seed: int, suite: str = "cloth", evals: int = 4,
            train: bool = True) -> dict:
    """Train one (variant, seed) run (or reuse a finished one) and read its score and costs. ``train`` False:
    read a finished run only (an unfinished one comes back as an error)."""
    recipe, sets = settings(variant, suite, evals)
    out = root / f"{variant}_s{seed}"
    metrics = out / "metrics.csv"
    done_before = finished(out)
    if not done_before and not train:
        return {"variant": variant, "seed": seed, "error": ["not finished"]}
    if not done_before:
        error = train_run(recipe, out, seed, sets)
        if error is not None:
            return {"variant": variant, "seed": seed, "error": error}
    return read_run(list(csv.DictReader(metrics.open())), SUITES[suite][1]) | {"variant": variant, "seed": seed}


def read_run(rows: list[dict], budget: int) -> dict:
    """One run's numbers from its ``metrics.csv`` rows.

    ``curve``: ``[env steps, eval/return]`` of every evaluation, the untrained policy's first. ``score``: the
    mean of the evaluations from half the budget on (with four evaluations: the last 3 of 4, this script's
    score before ``--evals`` existed). ``grad_share``: ``model/grad_share`` of every iteration that logged it
    (empty without a world model), and ``model_used``: how many of them had a share above 0; ``grad_cosine``:
    ``model/grad_cosine`` (model term against simulator term of the actor step) of those iterations;
    ``fit_steps``: the run's world-model fit steps; ``jacobian_error_a``: the last held-out action-Jacobian error."""
    curve = [[float(r["env/steps"] or 0.0), float(r["eval/return"])] for r in rows if r.get("eval/return")]
    late = [value for steps, value in curve if steps >= budget / 2]
    shares = [float(r["model/grad_share"]) for r in rows if r.get("model/grad_share")]
    cosines = [float(r["model/grad_cosine"]) for r in rows
               if r.get("model/grad_cosine") and float(r.get("model/grad_share") or 0.0) > 0]
    errors = [float(r["model/jacobian_error_a"]) for r in rows if r.get("model/jacobian_error_a")]
    last = rows[-1]
    return {"score": sum(late) / len(late), "final": curve[-1][1], "curve": curve, "grad_share": shares,
            "model_used": sum(x > 0 for x in shares), "grad_cosine": cosines,
            "fit_steps": sum(float(r.get("model/fit_steps") or 0.0) for r in rows),
            "jacobian_error_a": errors[-1] if errors else math.nan, "wall_s": float(last["time/wall_s"]),
            "sim_steps": float(last["sim/steps"]), "sim_vjps": float(last["sim/vjps"]),
            "env_steps": float(last["env/steps"])}


def curve_summary(runs: list[dict]) -> list[tuple[float, "object"]]:
    """Per evaluation env-step count that every run has: the IQM of ``eval/return`` over the runs with its
    95 % bootstrap interval (``mb.summarize_scores``). Runs evaluated at other counts are not merged."""
    import mbmix_fw as mb

    steps = sorted(set.intersection(*({s for s, _ in r["curve"]} for r in runs)))
    at = [{s: v for s, v in r["curve"]} for r in runs]
    summaries = mb.summarize_scores({str(s): [a[s] for a in at] for s in steps})
    return [(s, summaries[str(s)]) for s in steps]


def steps_to_reach(curve: list[tuple[float, "object"]], target: float) -> float | None:
    """The first evaluation env-step count whose IQM reaches ``target`` (None: never)."""
    return next((steps for steps, summary in curve if summary.iqm >= target), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="cloth")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=["shac", "mix", "mbmix"],
                        help="a suite's variants (see CLOTH, HOPPER), optionally with @H<n>, @lam<x>, @int<n>")
    parser.add_argument("--horizons", type=int, nargs="+", default=None,
                        help="run every variant at each of these window lengths (appends @H<n>), in this order")
    parser.add_argument("--evals", type=int, default=4,
                        help="evaluations per run, at equal env-step intervals (the curve's points)")
    parser.add_argument("--pairs", nargs="+", default=[], metavar="A:B",
                        help="paired differences A − B of the score on the same seeds (at each --horizons)")
    parser.add_argument("--target", default=None,
                        help="the variant whose final-evaluation IQM the others must reach (default: the first)")
    parser.add_argument("--figure", type=Path, default=None, help="write the IQM curves here (png)")
    parser.add_argument("--report-only", action="store_true", help="train nothing: report the finished runs")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--root", type=Path, default=None, help="run folders (default runs/<suite>_study)")
    parser.add_argument("--json", type=Path, default=None, help="write every run's numbers here")
    args = parser.parse_args(argv)
    root = args.root or REPO / "runs" / f"{args.suite}_study"
    budget = SUITES[args.suite][1]
    if args.evals < 1 or budget % args.evals:
        raise SystemExit(f"--evals must divide the {args.suite} budget of {budget} env steps")
    groups = [("", args.variants)] if args.horizons is None else [
        (f"@H{h}", [f"{v}@H{h}" for v in args.variants]) for h in args.horizons]
    variants = [v for _, vs in groups for v in vs]
    for variant in variants:
        settings(variant, args.suite)  # unknown names fail here, before any run
    for pair in args.pairs:
        if pair.count(":") != 1 or not set(pair.split(":")) <= set(args.variants):
            raise SystemExit(f"--pairs {pair!r}: expected A:B with A and B among --variants")
    import mbmix_fw as mb

    jobs = [(v, s) for _, vs in groups for s in range(args.first_seed, args.first_seed + args.seeds) for v in vs]
    results = run_jobs(jobs, lambda *job: run_one(root, *job, args.suite, args.evals, train=not args.report_only),
                       args.jobs)
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"FAILED {r['variant']} seed {r['seed']}: {r['error']}")
    ok = [r for r in results if "error" not in r]
    if args.json is not None:
        args.json.write_text(json.dumps(ok, indent=1))
    by_variant = {v: [r for r in ok if r["variant"] == v] for v in variants}
    by_variant = {v: rs for v, rs in by_variant.items() if rs}
    for _, vs in groups:  # wall-time ratios within a window length
        if any(v in by_variant for v in vs):
            print(score_table({v: by_variant[v] for v in vs if v in by_variant}))
    for suffix, _ in groups:
        for pair in args.pairs:
            a, b = (f"{x}{suffix}" for x in pair.split(":"))
            by_seed = lambda v: {r["seed"]: r["score"] for r in by_variant.get(v, [])}  # noqa: E731
            print(f"paired {a} − {b}: {mb.paired_difference(by_seed(a), by_seed(b))} seeds above")
    curves = {v: curve_summary(rs) for v, rs in by_variant.items()}
    target = args.target or variants[0]
    goal = curves[target][-1][1].iqm if target in curves else None
    print(reach_table(curves, groups, target, goal, budget))
    print(curve_table(curves))
    if args.figure is not None:
        plot_curves(curves, groups, args.figure, goal=goal,
                    goal_label=f"{target} final", title=f"{args.suite}: IQM over seeds, 95 % bootstrap band")
    return 1 if failed else 0


def score_table(by_variant: dict[str, list[dict]]) -> str:
    """Markdown: per variant its score's IQM [95 % CI], mean and costs (wall time as a ratio to the first
    variant's); then, for variants with a world model, what the model did: the iterations it acted in
    (``model/grad_share`` > 0, summed over seeds), its mean share and ``model/grad_cosine`` in them, fit steps
    a run, and the last held-out action-Jacobian error (mean over seeds)."""
    import mbmix_fw as mb

    summaries = mb.summarize_scores({v: [r["score"] for r in rs] for v, rs in by_variant.items()})
    mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
    average = lambda xs: f"{sum(xs) / len(xs):.3f}" if xs else "—"  # noqa: E731
    base = next(iter(by_variant.values()))
    lines = ["| variant | seeds | IQM [95% CI] of score | mean | wall s | × first wall | env steps | sim steps | "
             "sim VJPs |", "|---|---|---|---|---|---|---|---|---|"]
    model = ["", "| variant | iterations with model/grad_share > 0 | mean share there | mean grad_cosine there | "
             "fit steps a run | last jacobian_error_a |", "|---|---|---|---|---|---|"]
    for v, rs in by_variant.items():
        s = summaries[v]
        lines.append(f"| {v} | {len(rs)} | {s.iqm:.2f} [{s.low:.2f}, {s.high:.2f}] | {mean(rs, 'score'):.2f} | "
                     f"{mean(rs, 'wall_s'):.1f} | {mean(rs, 'wall_s') / mean(base, 'wall_s'):.2f} | "
                     f"{mean(rs, 'env_steps'):.0f} | {mean(rs, 'sim_steps'):.0f} | {mean(rs, 'sim_vjps'):.0f} |")
        shares = [x for r in rs for x in r["grad_share"]]
        if shares:
            acting = [x for x in shares if x > 0]
            cosines = [x for r in rs for x in r["grad_cosine"]]
            model.append(f"| {v} | {len(acting)} / {len(shares)} | {average(acting)} | {average(cosines)} | "
                         f"{mean(rs, 'fit_steps'):.0f} | {mean(rs, 'jacobian_error_a'):.3f} |")
    return "\n".join(lines + (model if len(model) > 3 else []))


def reach_table(curves: dict[str, list], groups: list[tuple[str, list[str]]], target: str, goal: float | None,
                budget: int) -> str:
    """Markdown: per variant, the env steps its IQM curve needs to reach ``target``'s final-evaluation IQM
    (``goal``) and the final-evaluation IQM of its own window length's first variant (SHAC, as listed first)."""
    reach = lambda curve, g: ("—" if g is None else "not reached" if steps_to_reach(curve, g) is None  # noqa: E731
                              else f"{steps_to_reach(curve, g):.0f} ({steps_to_reach(curve, g) / budget:.2f})")
    goal_text = "—" if goal is None else f"{goal:.2f}"
    lines = [f"| variant | final IQM | env steps (share of budget) to {target}'s final IQM {goal_text} | "
             "to its own window length's first variant's final IQM |", "|---|---|---|---|"]
    for _, vs in groups:
        present = [v for v in vs if v in curves]
        if not present:
            continue
        own = curves[present[0]][-1][1].iqm
        for v in present:
            lines.append(f"| {v} | {curves[v][-1][1].iqm:.2f} | {reach(curves[v], goal)} | "
                         f"{reach(curves[v], own)} ({present[0]}: {own:.2f}) |")
    return "\n".join(lines)


def curve_table(curves: dict[str, list]) -> str:
    """Markdown: one row per evaluation env-step count, one column per variant: IQM [95 % CI] of eval/return."""
    steps = sorted({s for curve in curves.values() for s, _ in curve})
    at = {v: dict(curve) for v, curve in curves.items()}
    lines = ["| env steps | " + " | ".join(curves) + " |", "|---" * (len(curves) + 1) + "|"]
    for s in steps:
        cells = [f"{at[v][s].iqm:.2f} [{at[v][s].low:.2f}, {at[v][s].high:.2f}]" if s in at[v] else "—"
                 for v in curves]
        lines.append(f"| {s:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(curves: dict[str, list], groups: list[tuple[str, list[str]]], path: Path,
                goal: float | None, goal_label: str, title: str) -> None:
    """One panel per window-length group: each variant's IQM curve with its bootstrap band, and the goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mbmix_fw.diagnostics.figures import save_figure

    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), sharey=True, squeeze=False)
    for ax, (suffix, variants) in zip(axes[0], groups):
        for v in variants:
            if v not in curves:
                continue
            steps = [s for s, _ in curves[v]]
            ax.plot(steps, [c.iqm for _, c in curves[v]], marker="o", ms=3, label=v.removesuffix(suffix))
            ax.fill_between(steps, [c.low for _, c in curves[v]], [c.high for _, c in curves[v]], alpha=0.2)
        if goal is not None:
            ax.axhline(goal, color="k", ls="--", lw=0.8, label=goal_label)
        ax.set_title(suffix.lstrip("@") or "recipe H")
        ax.set_xlabel("env steps")
    axes[0][0].set_ylabel("eval/return (IQM)")
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path, title)


if __name__ == "__main__":
    sys.exit(main())
