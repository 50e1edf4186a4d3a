"""Methods against each other at equal env steps, over seeds: issue 15's MB-MIX study and issue 18's
adaptive horizons, on the cloth (``--suite cloth``) or on Brax hopper at a CPU size (``--suite hopper``).

Each variant is a shipped recipe plus ``--set`` overrides. Every run of a suite spends the same env-step
budget (``run.env_steps``: the cloth 40 × 16 steps × 8 envs = 5 120, hopper 100 × 16 × 16 = 25 600) and is
evaluated at the same env-step multiples (``run.eval_every_env_steps``: four evaluations) on the same
episodes (cloth 32, hopper 16), so a variant whose window length changes (``ahac``, ``agree``, ``@H<n>``)
spends what a fixed-H one does. A run's score is the mean of its last 3 evaluations; a variant's score is
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

A variant may carry settings after ``@``: ``H<n>`` sets the (first) window length, ``lam<x>`` and ``int<n>``
the mix estimator's λ and interval. (Until commit d2fbd9d this script was ``cloth_mbmix_study.py``, where
``@H<n>`` set ``run.iterations = 640 / n`` for the same equal env steps.)
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

ROOM = ["scheduler.warmup_env_steps=1280", "scheduler.model_error_gate=1e9", "scheduler.model_fit_per_transition=4.0"]
"""The world model with room to act on the cloth (a quarter of the 5 120-step budget as warm-up)."""

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
    # fit budget per new transition (4 passes: 128 transitions / 128 per batch -> +4 steps per iteration)
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


def settings(variant: str, suite: str = "cloth") -> tuple[str, list[str]]:
    """The recipe and ``--set`` overrides of ``variant`` (``base@H32@lam0.9@int2``: see the docstring)."""
    variants, budget = SUITES[suite]
    base, *extras = variant.split("@")
    if base not in variants:
        raise SystemExit(f"unknown variant {base!r} in suite {suite}; choose from {sorted(variants)}")
    recipe, sets = variants[base]
    sets = [*sets, f"run.env_steps={budget}", "run.iterations=100000", "run.eval_every=0",
            f"run.eval_every_env_steps={budget // 4}", "run.checkpoint_every=100000"]
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


def run_one(root: Path, variant: str, seed: int, suite: str = "cloth") -> dict:
    """Train one (variant, seed) run (or reuse a finished one) and read its score and costs."""
    recipe, sets = settings(variant, suite)
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
    parser.add_argument("--suite", choices=sorted(SUITES), default="cloth")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=["shac", "mix", "mbmix"],
                        help="a suite's variants (see CLOTH, HOPPER), optionally with @H<n>, @lam<x>, @int<n>")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--root", type=Path, default=None, help="run folders (default runs/<suite>_study)")
    parser.add_argument("--json", type=Path, default=None, help="write every run's numbers here")
    args = parser.parse_args(argv)
    root = args.root or REPO / "runs" / f"{args.suite}_study"
    for variant in args.variants:
        settings(variant, args.suite)  # unknown names fail here, before any run
    import mbmix_fw as mb

    jobs = [(v, s) for s in range(args.first_seed, args.first_seed + args.seeds) for v in args.variants]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: run_one(root, *job, args.suite), jobs))
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
          f"env steps | sim steps | sim VJPs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for v, rs in by_variant.items():
        if not rs:
            continue
        s = summaries[v]
        print(f"| {v} | {len(rs)} | {s.iqm:.2f} [{s.low:.2f}, {s.high:.2f}] | {mean(rs, 'score'):.2f} | "
              f"{mean(rs, 'wall_s'):.1f} | {mean(rs, 'wall_s') / mean(base, 'wall_s'):.2f} | "
              f"{mean(rs, 'env_steps'):.0f} | {mean(rs, 'sim_steps'):.0f} | {mean(rs, 'sim_vjps'):.0f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
