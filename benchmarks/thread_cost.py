"""What ``run.threads = 1`` costs: the wall time of a short run with one torch thread against the same
run with torch's default (every core), alternating fresh processes, in the same session.

    python benchmarks/thread_cost.py [--recipe recipes/cloth_mix.toml] [--iterations 8] [--rounds 2]

Prints each round's seconds and the median ratio one-thread / default. One thread makes the numbers
the same on every machine (README, "Reproducibility"); on a machine with more cores the price grows.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(recipe: str, iterations: int, threads: int | None) -> float:
    sets = [f"--set=run.iterations={iterations}", "--set=run.eval_every=0", "--no-progress"]
    if threads is not None:
        sets.append(f"--set=run.threads={threads}")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mbmix_fw", "run", recipe, "--out", f"{out}/run", *sets],
                       cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/cloth_mix.toml")
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"cpu_count={os.cpu_count()} recipe={args.recipe} iterations={args.iterations}")
    ratios = []
    for r in range(args.rounds):
        default = timed(args.recipe, args.iterations, None)
        one = timed(args.recipe, args.iterations, 1)
        ratios.append(one / default)
        print(f"round {r}: default {default:.1f} s, run.threads=1 {one:.1f} s, ratio {one / default:.2f}")
    print(f"median ratio run.threads=1 / default: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
