"""SHAC, MIX and MB-MIX across the wall's stiffness: where the simulator's gradients stop being informative
(``wall_push``, plugins/mbmix_toy/wall.py), does a world model help, and should it match the simulator's
Jacobians or be smoother than them?

Variants (the shipped ``recipes/wall_*.toml``, one setting each):

- ``shac``: ``wall_shac.toml``;  ``mix``: ``wall_mix.toml`` (the λ-mixture, model-free);
- ``mbmix``: ``wall_mbmix.toml`` (Sobolev model fitted to next states and the simulator's Jacobians, dyna);
- ``mbmix_smooth``: ``wall_mbmix_smooth.toml`` (the same with the model asked to be smoother);
- ``beta1``: ``wall_mbmix.toml`` with ``scheduler.env_weight = 1``: the model fitted (same data, same random
  numbers up to the first branch) but never used, i.e. what the model's gradient contributes.

Every run spends the same env-step budget (``run.env_steps``: 60 iterations × 16 steps × 32 envs = 30 720)
and is evaluated at the same env-step multiples (four evaluations, 32 episodes each, plus the initial one).
Per run two scores: ``final``, the mean of the last 3 evaluations (as benchmarks/learning_study.py), and
``curve``, the mean of the 4 evaluations after the initial one (area under eval/return over env steps, so a
method that learns sooner scores higher). Per (variant, stiffness): the IQM over seeds with a 95 %
stratified-bootstrap interval (``mb.summarize_scores``), and the paired difference to SHAC on the same seeds
(mean ± standard error, seeds above); for model runs, the model's mean share of the actor's gradient and its
last held-out errors (means over seeds) and rollbacks. Runs use one torch thread each, ``--jobs`` at once,
seed-major so every variant sees the same machine load; finished runs are reused (delete ``--root`` to start
over). ``--task press`` runs the contact task (``TASKS``) instead of the recipes' position task.

Simulator calls. Every variant's training windows cost the same 30 720 steps and 30 720 VJPs (the actor's
backward reaches every real step once; the model's probes come free from it, ``probe_source = "adjoint"``).
The model runs (``beta1`` included) log 15 104 more steps and 30 208 more VJPs: the world-model learner's
held-out check (``EVAL_TRANSITIONS`` = 256 transitions of each new window, from the second iteration on, 59 ×
256, with the full simulator Jacobian on this small env: one step and ``S`` = 2 VJPs each). They train nothing;
they act on training only through the rollback guard (a model whose held-out error exceeds 4× its best is
rolled back), whose count the model table reports. So MB-MIX against its β = 1 twin is equal in every call;
against SHAC and MIX it is equal in learning calls and pays the monitor on top.

    python benchmarks/stiffness_study.py --stiffness 1e2 1e4 1e5 --seeds 5 --jobs 2 \\
        --json benchmarks/stiffness_study.json --markdown /tmp/stiffness_table.md
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

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "shac": ("recipes/wall_shac.toml", []),
    "mix": ("recipes/wall_mix.toml", []),
    "mbmix": ("recipes/wall_mbmix.toml", []),
    "mbmix_smooth": ("recipes/wall_mbmix_smooth.toml", []),
    "beta1": ("recipes/wall_mbmix.toml", ["scheduler.env_weight=1.0"]),
}
BUDGET = 60 * 16 * 32
"""Env steps per run (all envs counted): the recipes' 60 iterations of 16-step windows over 32 envs."""
TASKS: dict[str, list[str]] = {
    "position": [],
    "press": ["env.press_force=2.5", "env.init_distance=[0.1, 0.5]"],
}
"""The wall task's two settings. ``position``: the recipes' own (reach the wall's surface and stay; the return
is made on the free approach). ``press``: the contact task (plugins/mbmix_toy/wall.py, ``press_force``): hold
a mean wall force of 2.5 N (half the largest push) from starts 0.1–0.5 m away, so the return is made in contact
(the approach is a few steps) — the setting where the wall's stiffness decides the score."""


def settings(variant: str, stiffness: float, task: str = "position") -> tuple[str, list[str]]:
    """The recipe and ``--set`` overrides of one run."""
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; choose from {sorted(VARIANTS)}")
    if task not in TASKS:
        raise SystemExit(f"unknown task {task!r}; choose from {sorted(TASKS)}")
    recipe, sets = VARIANTS[variant]
    return recipe, [*sets, *TASKS[task], f"env.stiffness={stiffness}", f"run.env_steps={BUDGET}",
                    "run.iterations=100000", "run.eval_every=0", f"run.eval_every_env_steps={BUDGET // 4}",
                    "run.checkpoint_every=100000"]


def run_one(root: Path, variant: str, stiffness: float, seed: int, task: str = "position") -> dict:
    """Train one run (or reuse a finished one) and read its scores and costs."""
    recipe, sets = settings(variant, stiffness, task)
    out = root / f"k{stiffness:g}" / f"{variant}_s{seed}"
    metrics = out / "metrics.csv"
    if not finished(out):
        error = train(recipe, out, seed, sets)
        if error is not None:
            return {"variant": variant, "stiffness": stiffness, "seed": seed, "error": error}
    rows = list(csv.DictReader(metrics.open()))
    evals = [float(r["eval/return"]) for r in rows if r.get("eval/return") and int(r["iteration"]) > 0]
    last = rows[-1]
    return {"variant": variant, "stiffness": stiffness, "seed": seed, "final": sum(evals[-3:]) / len(evals[-3:]),
            "curve": sum(evals) / len(evals), "evals": evals, "wall_s": float(last["time/wall_s"]),
            "env_steps": float(last["env/steps"]), "sim_steps": float(last["sim/steps"]),
            "sim_vjps": float(last["sim/vjps"]), **model_numbers(rows)}


def model_numbers(rows: list[dict]) -> dict:
    """A model run's share of the actor's gradient (mean over iterations of ``model/grad_share``) and its last
    held-out errors (next state in units of the typical step; action Jacobian, relative): whether the model
    acted, and how well it fits the wall. Empty for model-free runs."""
    def column(name: str) -> list[float]:
        return [float(r[name]) for r in rows if r.get(name) not in (None, "")]

    share, state, jac = column("model/grad_share"), column("model/state_error"), column("model/jacobian_error_a")
    if not share:
        return {}
    rollbacks = column("model/rollbacks")
    return {"grad_share": sum(share) / len(share), "state_error": state[-1] if state else math.nan,
            "jacobian_error_a": jac[-1] if jac else math.nan, "rollbacks": rollbacks[-1] if rollbacks else 0.0}


def table(results: list[dict], variants: list[str], stiffnesses: list[float]) -> str:
    """The markdown table: per stiffness and variant, both scores' IQM [95 % CI], paired difference to SHAC,
    wall time and simulator work."""
    import mbmix_fw as mb

    lines = ["| k (N/m) | variant | seeds | final: IQM [95% CI] | curve: IQM [95% CI] | final − SHAC (paired) | "
             "curve − SHAC (paired) | wall s | sim steps | sim VJPs |", "|---|---|---|---|---|---|---|---|---|---|"]
    for k in stiffnesses:
        groups = {v: [r for r in results if r["variant"] == v and r["stiffness"] == k] for v in variants}
        groups = {v: rs for v, rs in groups.items() if rs}
        final = mb.summarize_scores({v: [r["final"] for r in rs] for v, rs in groups.items()})
        curve = mb.summarize_scores({v: [r["curve"] for r in rs] for v, rs in groups.items()})
        base = groups.get("shac", [])
        for v, rs in groups.items():
            cells = []
            for key in ("final", "curve"):
                by_seed = lambda runs: {r["seed"]: r[key] for r in runs}  # noqa: E731
                difference = mb.paired_difference(by_seed(rs), by_seed(base))
                cells.append("—" if v == "shac" else str(difference))
            avg = lambda key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
            lines.append(f"| {k:g} | {v} | {len(rs)} | {final[v]} | {curve[v]} | {cells[0]} | {cells[1]} | "
                         f"{avg('wall_s'):.1f} | {avg('sim_steps'):.0f} | {avg('sim_vjps'):.0f} |")
    models = [r for r in results if "grad_share" in r]
    if models:
        lines += ["", "| k (N/m) | variant | seeds | model/grad_share (mean) | held-out state error (last) | "
                  "held-out action-Jacobian error (last) | rollbacks (mean) |", "|---|---|---|---|---|---|---|"]
        for k in stiffnesses:
            for v in variants:
                rs = [r for r in models if r["variant"] == v and r["stiffness"] == k]
                if rs:
                    avg = lambda key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
                    lines.append(f"| {k:g} | {v} | {len(rs)} | {avg('grad_share'):.3f} | {avg('state_error'):.3f} | "
                                 f"{avg('jacobian_error_a'):.3f} | {avg('rollbacks'):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stiffness", type=float, nargs="+", default=[1e2, 1e4, 1e5])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--task", choices=sorted(TASKS), default="position",
                        help="the wall task: position (the recipes') or press (the contact task)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "stiffness_study")
    parser.add_argument("--json", type=Path, default=None, help="write every run's numbers here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here")
    args = parser.parse_args(argv)
    for variant in args.variants:
        settings(variant, 1.0)  # unknown names fail here, before any run
    jobs = [(v, k, s) for s in range(args.first_seed, args.first_seed + args.seeds)
            for k in args.stiffness for v in args.variants]
    results = run_jobs(jobs, lambda *job: run_one(args.root, *job, task=args.task), args.jobs)
    return report(results, lambda ok: table(ok, args.variants, args.stiffness),
                  lambda r: f"{r['variant']} k={r['stiffness']:g} seed {r['seed']}",
                  json_path=args.json, markdown_path=args.markdown)

if __name__ == "__main__":
    sys.exit(main())
