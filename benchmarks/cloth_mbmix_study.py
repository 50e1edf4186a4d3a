"""MB-MIX on the cloth against SHAC and MIX at equal env steps, with its ablations (issue 15's study).

Each variant is a shipped recipe plus ``--set`` overrides; every variant runs the same seeds, the same
40 iterations × 8 envs × 16-step windows (equal env steps) and evaluates the same 32 cloths. A run's score
is the mean of its last 3 evaluations (iterations 20, 30, 40); a variant's score is the IQM over seeds with
a 95 % stratified-bootstrap interval (``mb.summarize_scores``). Wall time and the simulator work each run
did (``sim/steps`` forward steps, ``sim/vjps`` vector-Jacobian products, probes included) are reported
beside it, as ratios to SHAC's, so methods compare at equal simulator cost too.

Runs are interleaved (seed-major) so every variant sees the same machine load; each run uses one torch
thread; ``--jobs`` runs go at once. Finished runs are reused (delete ``--root`` to start over).

    python benchmarks/cloth_mbmix_study.py --seeds 10 --variants shac mix mbmix
    python benchmarks/cloth_mbmix_study.py --seeds 5 --variants mse random_probes critic_on_model beta1 blend
    python benchmarks/cloth_mbmix_study.py --seeds 5 --variants shac@H8 shac@H64 mix@lam0.8@int2

A variant may carry settings after ``@``: ``H<n>`` sets the window length and keeps env steps equal to the
recipes' (``run.iterations = 40·16/n``, four evaluations per run); ``lam<x>`` and ``int<n>`` set the mix
estimator's λ and interval.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, tuple[str, list[str]]] = {
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
}


ENV_STEPS_PER_ENV = 40 * 16
"""Env steps per env of every study run: the recipes' 40 iterations of 16-step windows."""


def settings(variant: str) -> tuple[str, list[str]]:
    """The recipe and ``--set`` overrides of ``variant`` (``base@H32@lam0.9@int2``: see the docstring)."""
    base, *extras = variant.split("@")
    if base not in VARIANTS:
        raise SystemExit(f"unknown variant {base!r}; choose from {sorted(VARIANTS)}")
    recipe, sets = VARIANTS[base]
    sets = list(sets)
    for extra in extras:
        if extra.startswith("H"):
            horizon = int(extra[1:])
            iterations = ENV_STEPS_PER_ENV // horizon
            sets += [f"estimator.horizon={horizon}", f"run.iterations={iterations}",
                     f"run.eval_every={max(1, iterations // 4)}", f"run.checkpoint_every={iterations}"]
        elif extra.startswith("lam"):
            sets.append(f"estimator.lam={float(extra[3:])}")
        elif extra.startswith("int"):
            sets.append(f"estimator.interval={int(extra[3:])}")
        else:
            raise SystemExit(f"unknown variant setting {extra!r} in {variant!r}")
    return recipe, sets


def run_one(root: Path, variant: str, seed: int) -> dict:
    """Train one (variant, seed) run (or reuse a finished one) and read its score and costs."""
    recipe, sets = settings(variant)
    out = root / f"{variant}_s{seed}"
    metrics = out / "metrics.csv"
    if not (out / "checkpoints" / "last.pt").exists() or not _finished(metrics):
        args = [sys.executable, "-m", "mbmix_fw", "run", str(REPO / recipe), "--out", str(out),
                "--set", f"run.seed={seed}", *(x for s in sets for x in ("--set", s))]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO)
        if done.returncode != 0:
            return {"variant": variant, "seed": seed, "error": done.stderr.strip().splitlines()[-1:]}
    rows = list(csv.DictReader(metrics.open()))
    evals = [float(r["eval/return"]) for r in rows if r.get("eval/return") and int(r["iteration"]) > 0]
    last = rows[-1]
    return {"variant": variant, "seed": seed, "score": sum(evals[-3:]) / len(evals[-3:]),
            "final": evals[-1], "wall_s": float(last["time/wall_s"]), "sim_steps": float(last["sim/steps"]),
            "sim_vjps": float(last["sim/vjps"]), "env_steps": float(last["env/steps"])}


def _finished(metrics: Path) -> bool:
    if not metrics.exists():
        return False
    rows = list(csv.DictReader(metrics.open()))
    return bool(rows) and rows[-1].get("time/wall_s") not in (None, "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=["shac", "mix", "mbmix"],
                        help=f"from {sorted(VARIANTS)}, optionally with @H<n>, @lam<x>, @int<n>")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "cloth_mbmix_study")
    parser.add_argument("--json", type=Path, default=None, help="write every run's numbers here")
    args = parser.parse_args(argv)
    for variant in args.variants:
        settings(variant)  # unknown names fail here, before any run
    import mbmix_fw as mb

    jobs = [(v, s) for s in range(args.first_seed, args.first_seed + args.seeds) for v in args.variants]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: run_one(args.root, *job), jobs))
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"FAILED {r['variant']} seed {r['seed']}: {r['error']}")
    ok = [r for r in results if "error" not in r]
    if args.json is not None:
        args.json.write_text(json.dumps(ok, indent=1))
    by_variant = {v: [r for r in ok if r["variant"] == v] for v in args.variants}
    summaries = mb.summarize_scores({v: [r["score"] for r in rs] for v, rs in by_variant.items() if rs})
    mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
    base = by_variant.get("shac") or next(iter(by_variant.values()))
    print(f"| variant | seeds | IQM [95% CI] of mean of last 3 eval/return | mean | wall s | × SHAC wall | "
          f"sim steps | sim VJPs |")
    print("|---|---|---|---|---|---|---|---|")
    for v, rs in by_variant.items():
        if not rs:
            continue
        s = summaries[v]
        print(f"| {v} | {len(rs)} | {s.iqm:.2f} [{s.low:.2f}, {s.high:.2f}] | {mean(rs, 'score'):.2f} | "
              f"{mean(rs, 'wall_s'):.1f} | {mean(rs, 'wall_s') / mean(base, 'wall_s'):.2f} | "
              f"{mean(rs, 'sim_steps'):.0f} | {mean(rs, 'sim_vjps'):.0f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
