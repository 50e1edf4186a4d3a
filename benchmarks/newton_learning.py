"""SHAC on a Newton robot: run a recipe (default ``recipes/hopper_newton_shac.toml``) for several seeds and summarize.

    python benchmarks/newton_learning.py --seeds 0 1 2 3 4 --jobs 2 --out runs/hopper_newton_shac
    python benchmarks/newton_learning.py --summarize-only --out runs/hopper_newton_shac
    python benchmarks/newton_learning.py --recipe recipes/humanoid_newton_shac.toml \
        --set run.iterations=100 --out runs/humanoid_newton_shac

Each run: the recipe with ``run.seed``, ``run.threads = 1`` and any ``--set`` overrides. Per seed it prints the
return of the initial policy (``eval/return`` at iteration 0), the final one, the score (mean of the last 3
evaluations, the project's convention) and the run's wall time; then the IQM of initial and final scores with
95 % stratified-bootstrap intervals (``mb.summarize_scores``).
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mbmix_fw as mb

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "hopper_newton_shac.toml"


def run(seed: int, out: Path, recipe: Path = RECIPE, sets: tuple[str, ...] = ()) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "mbmix_fw", "run", str(recipe), "--out", str(out / f"seed{seed}"),
                    "--no-progress", "--set", f"run.seed={seed}", "--set", "run.threads=1",
                    *(x for s in sets for x in ("--set", s))], check=True, env=env)


def summary(folder: Path) -> dict[str, float]:
    with open(folder / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    returns = [float(r["eval/return"]) for r in rows if r["eval/return"]]
    return {"initial": returns[0], "final": returns[-1], "score": sum(returns[-3:]) / 3,
            "wall_s": float(rows[-1]["time/wall_s"]), "env_steps": float(rows[-1]["env/steps"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "hopper_newton_shac")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every run (repeatable)")
    parser.add_argument("--summarize-only", action="store_true")
    args = parser.parse_args()
    if not args.summarize_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda s: run(s, args.out, args.recipe.resolve(), tuple(args.sets)), args.seeds))
    seeds = sorted(args.out.glob("seed*"), key=lambda p: int(p.name[4:]))
    rows = {p.name: summary(p) for p in seeds}
    print("| seed | initial eval/return | final eval/return | score (last 3) | wall s | env steps |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name[4:]} | {r['initial']:.1f} | {r['final']:.1f} | {r['score']:.1f} | {r['wall_s']:.0f} "
              f"| {r['env_steps']:.0f} |")
    stats = mb.summarize_scores({"initial": [r["initial"] for r in rows.values()],
                                 "score": [r["score"] for r in rows.values()]})
    for name, s in stats.items():
        print(f"{name}: IQM {s} over {s.runs} seeds")


if __name__ == "__main__":
    main()
