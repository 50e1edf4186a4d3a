"""The seed's window-length experiment on a Newton robot at a CPU size: SHAC, MB-MIX (and MIX) across
H_max ∈ {16, 32, 48, 64, 96} at equal env steps and equal simulator calls, over seeds.

Question (the seed's robustness claim): does MB-MIX's score vary less with the window length than SHAC's,
and is its worst H_max better than SHAC's worst? ``benchmarks/gpu_suite.py`` runs the same sweep on the
Newton ant at its GPU size; this is the CPU size.

Env (``--env``): ``cartpole`` (``recipes/cartpole_newton_{shac,mix,mbmix}.toml``, Newton's Featherstone
cart-pole swing-up, 16 envs, 240-step episodes), ``hopper`` (``recipes/hopper_newton_*.toml``, 16 hoppers,
1000-step episodes, 8 evaluation hoppers; the size at which SHAC learns here: ``--units 32`` is 98 304 env
steps, about the recipe's 102 400) or ``ant`` (``recipes/ant_newton_*.toml``, 16 ants, 1000-step
episodes, 8 evaluation episodes). The ant is the seed's robot; the cart-pole is the size a loaded 2-core CPU
finishes (RESULTS.md, "H_max sweep on Newton at a CPU size", says what each costs).

Every run of a study spends the same env steps, ``envs × 192 × --units`` (192 = the least common multiple of
the H_max values, so every H_max takes whole iterations: at 16 envs and 4 units, 12 288 env steps = 48
iterations at H = 16, 8 at H = 96), so the same forward simulator steps and, every step being differentiated
once, the same VJPs (the table reports both, from each run's ``sim/steps`` and ``sim/vjps``: MB-MIX's
Jacobian probes ride on the adjoint tap, and its held-out model errors are measured on the window's own
probes, ``run.model_error_probes = "window"``, so neither costs a simulator call; the cart-pole table in
RESULTS.md predates that setting and shows what the exact held-out Jacobians cost). Each run is evaluated 4
times at equal env-step spacing on the recipe's evaluation episodes; MB-MIX's model-free warm-up is the first
quarter of the env steps for every H_max (``scheduler.warmup_env_steps``) and its fit budget is counted per
transition (``FIT_PER_TRANSITION``), so each H_max fits its model as often and as long before using it. A
run's score is the mean of its last 3 evaluations (``learning_study.py``'s score); a (method, H_max) cell is
the IQM over seeds with a 95 % stratified-bootstrap interval (``mb.summarize_scores``); each
method's row of worst cells and its spread (best IQM − worst IQM over H_max) answer the question.

Runs use one torch thread each (``run.threads = 1``), ``--jobs`` at once, seed-major (all of seed 0 before
seed 1: a study stopped early leaves whole seeds); finished runs are reused (delete ``--root`` to start over).

    python benchmarks/hmax_study.py --env cartpole --seeds 5 --jobs 2 \\
        --json benchmarks/hmax_study_cartpole.json --markdown /tmp/hmax_table.md
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # study_jobs, a sibling module
from study_jobs import finished, report, run_jobs, train  # noqa: E402

HMAX = [16, 32, 48, 64, 96]
UNIT = 192
"""The least common multiple of ``HMAX``: env steps per env of one budget unit."""
ENVS = {"cartpole": {"envs": 16, "recipes": {m: f"recipes/cartpole_newton_{m}.toml" for m in ("shac", "mix", "mbmix")}},
        "hopper": {"envs": 16, "recipes": {m: f"recipes/hopper_newton_{m}.toml" for m in ("shac", "mix", "mbmix")}},
        "ant": {"envs": 16, "recipes": {m: f"recipes/ant_newton_{m}.toml" for m in ("shac", "mix", "mbmix")}}}
EVALUATIONS = 4
FIT_PER_TRANSITION = 8
"""MB-MIX's model fit budget in units of data (``scheduler.model_fit_per_transition``, with
``model_fit_steps = 0``): 8 minibatch steps per batch of new transitions, which is the recipes' 8 fit steps per
iteration at H = 32 with 16 envs and batches of 512. Per iteration, it would give H = 96 a sixth of H = 16's
fit steps; per transition, every H_max fits its model equally often."""


def budget(env: str, units: int) -> int:
    return ENVS[env]["envs"] * UNIT * units


def settings(env: str, method: str, horizon: int, units: int) -> tuple[str, list[str]]:
    """The recipe and ``--set`` overrides of one run."""
    if method not in ENVS[env]["recipes"]:
        raise SystemExit(f"hmax_study: unknown method {method!r}; choose from {sorted(ENVS[env]['recipes'])}")
    steps = budget(env, units)
    sets = [f"env.num_envs={ENVS[env]['envs']}", f"estimator.horizon={horizon}", f"run.env_steps={steps}",
            "run.iterations=100000", "run.eval_every=0", f"run.eval_every_env_steps={steps // EVALUATIONS}",
            "run.checkpoint_every=100000", "run.threads=1"]
    if method == "mbmix":
        sets += [f"scheduler.warmup_env_steps={steps // 4}", "scheduler.model_fit_steps=0",
                 f"scheduler.model_fit_per_transition={FIT_PER_TRANSITION}", "run.model_error_probes=window"]
    return ENVS[env]["recipes"][method], sets


def run_folder(root: Path, env: str, method: str, horizon: int, seed: int, label: str = "") -> Path:
    """Where one run lives: ``ROOT/ENV/METHOD[LABEL]_H<h>_s<seed>`` (a label keeps an ablation's runs apart)."""
    return root / env / f"{method}{label}_H{horizon}_s{seed}"


def run_one(root: Path, env: str, method: str, horizon: int, seed: int, units: int,
            extra: tuple[str, ...] = (), label: str = "") -> dict:
    """Train one run (or reuse a finished one) and read its score and costs."""
    recipe, sets = settings(env, method, horizon, units)
    sets = [*sets, *extra]
    out = run_folder(root, env, method, horizon, seed, label)
    metrics = out / "metrics.csv"
    key = {"env": env, "method": method, "horizon": horizon, "seed": seed}
    if not finished(out):
        error = train(recipe, out, seed, sets)
        if error is not None:
            return {**key, "error": error}
    rows = list(csv.DictReader(metrics.open()))
    evals = [float(r["eval/return"]) for r in rows if r.get("eval/return") and int(r["iteration"]) > 0]
    last = rows[-1]
    return {**key, "score": sum(evals[-3:]) / len(evals[-3:]), "evals": evals,
            "wall_s": float(last["time/wall_s"]), "env_steps": float(last["env/steps"]),
            "sim_steps": float(last["sim/steps"]), "sim_vjps": float(last["sim/vjps"])}


def table(results: list[dict], methods: list[str], horizons: list[int]) -> str:
    """H_max down, methods across: IQM [95 % CI] (seeds); then each method's worst cell and spread, and the
    simulator work per run (means), which must be equal across the row."""
    import mbmix_fw as mb

    cells = mb.summarize_scores({f"{m}/{h}": [r["score"] for r in results if r["method"] == m
                                              and r["horizon"] == h]
                                 for m in methods for h in horizons
                                 if any(r["method"] == m and r["horizon"] == h for r in results)})
    lines = ["| H_max | " + " | ".join(methods) + " | env steps | sim steps (mean) | sim VJPs (mean) |",
             "|---|" + "---|" * (len(methods) + 3)]
    for h in horizons:
        rs = [r for r in results if r["horizon"] == h]
        if not rs:
            continue
        shown = []
        for m in methods:
            c = cells.get(f"{m}/{h}")
            shown.append(f"{c.iqm:.1f} [{c.low:.1f}, {c.high:.1f}] ({c.runs})" if c else "—")
        avg = lambda key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
        work = "/".join(sorted({f"{r['env_steps']:.0f}" for r in rs}))  # one number when budgets are equal
        lines.append(f"| {h} | " + " | ".join(shown) + f" | {work} | {avg('sim_steps'):.0f} | {avg('sim_vjps'):.0f} |")
    worst, spread = [], []
    for m in methods:
        mine = {h: cells[f"{m}/{h}"] for h in horizons if f"{m}/{h}" in cells}
        if not mine:
            worst.append("—")
            spread.append("—")
            continue
        h_worst = min(mine, key=lambda h: mine[h].iqm)
        worst.append(f"{mine[h_worst].iqm:.1f} (H = {h_worst})")
        spread.append(f"{max(c.iqm for c in mine.values()) - mine[h_worst].iqm:.1f}")
    lines.append("| worst | " + " | ".join(worst) + " | | | |")
    lines.append("| best − worst | " + " | ".join(spread) + " | | | |")
    per_method = [f"{m}: sim steps {_mean(results, m, 'sim_steps'):.0f}, sim VJPs {_mean(results, m, 'sim_vjps'):.0f}, "
                  f"wall {_mean(results, m, 'wall_s'):.0f} s" for m in methods if any(r["method"] == m for r in results)]
    return "\n".join(lines) + "\n\nPer run (means over H_max and seeds): " + "; ".join(per_method)


def _mean(results: list[dict], method: str, key: str) -> float:
    values = [r[key] for r in results if r["method"] == method]
    return sum(values) / len(values) if values else math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(ENVS), default="cartpole")
    parser.add_argument("--methods", nargs="+", default=["shac", "mbmix"])
    parser.add_argument("--horizons", type=int, nargs="+", default=HMAX)
    parser.add_argument("--units", type=int, default=4, help=f"env steps per run = envs × {UNIT} × units")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "hmax_study")
    parser.add_argument("--json", type=Path, default=None, help="write every run's numbers here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every run after the study's own (an ablation); use with --label")
    parser.add_argument("--label", default="", help="suffix of the methods' run folders, e.g. '_mh16' for an "
                        "ablation, so its runs never mix with the study's")
    parser.add_argument("--collect-only", action="store_true",
                        help="start no run: tabulate the finished runs under --root (a study stopped at a deadline)")
    args = parser.parse_args(argv)
    bad = [h for h in args.horizons if (UNIT * args.units) % h]
    if bad:
        print(f"hmax_study: --horizons {bad} do not divide {UNIT} × --units env steps per env", file=sys.stderr)
        return 2
    for method in args.methods:
        settings(args.env, method, args.horizons[0], args.units)  # unknown names fail here, before any run
    jobs = [(args.env, m, h, s, args.units) for s in range(args.first_seed, args.first_seed + args.seeds)
            for m in args.methods for h in args.horizons]
    if args.collect_only:
        jobs = [job for job in jobs if finished(run_folder(args.root, *job[:4], args.label))]
    results = run_jobs(jobs, lambda *job: run_one(args.root, *job, tuple(args.extra), args.label), args.jobs)
    return report(results, lambda ok: table(ok, args.methods, args.horizons),
                  lambda r: f"{r['method']} H={r['horizon']} seed {r['seed']}",
                  json_path=args.json, markdown_path=args.markdown)

if __name__ == "__main__":
    sys.exit(main())
