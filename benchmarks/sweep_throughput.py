"""Wall time of K tiny trials through ``mbmix-fw sweep`` (local Ray, started by the command and counted)
against the same K runs one after another with ``mbmix-fw run`` — what a user does without the sweep.

Each trial's torch threads equal its CPUs: sweep trials get ``--cpus-per-trial`` CPUs and as many threads;
each sequential run has the whole machine (threads = all cores). Both sides are timed from the command
line, so both pay process start-up and imports. The ratio sweep / sequential is printed last (< 1: the
sweep is faster; the goal with 4 trials on 2 cores is <= 0.75).

    python benchmarks/sweep_throughput.py [--trials 4] [--iterations 30] [--cpus-per-trial 1]
                                          [--sequential-threads 1]   # a baseline that never oversubscribes
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = """
[run]
iterations = {iterations}
checkpoint_every = {iterations}
eval_envs = 4
device = "cpu"
out = "{root}/{{name}}"

[env]
kind = "pendulum"
num_envs = 32

[estimator]
kind = "shac"
horizon = 16

[policy]
hidden = [32, 32]

[critic]
hidden = [32, 32]
iterations = 4
minibatches = 2
"""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--cpus-per-trial", type=int, default=1)
    parser.add_argument("--sequential-threads", type=int, default=None,
                        help="torch threads of each sequential run (default: all cores, the whole machine)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    cli = [sys.executable, "-m", "mbmix_fw"]
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "tiny.toml"
        recipe.write_text(RECIPE.format(iterations=args.iterations, root=Path(tmp) / "runs"))
        seq_threads = args.sequential_threads or cores
        whole = {**os.environ, "OMP_NUM_THREADS": str(seq_threads)}
        sequential = sum(timed([*cli, "run", str(recipe), "--no-progress", "--out", f"{tmp}/seq{seed}",
                                "--set", f"run.seed={seed}"], whole) for seed in range(args.trials))
        per_trial = {**os.environ, "OMP_NUM_THREADS": str(args.cpus_per_trial)}
        sweep = timed([*cli, "sweep", str(recipe), "--seeds", f"0-{args.trials - 1}", "--name", "bench",
                       "--cpus-per-trial", str(args.cpus_per_trial)], per_trial)
    print(f"machine: {cores} cores (load average {os.getloadavg()[0]:.1f}); "
          f"{args.trials} trials of {args.iterations} iterations")
    print(f"sequential mbmix-fw run x{args.trials} (threads={seq_threads}): {sequential:.1f} s")
    print(f"mbmix-fw sweep, local Ray, {args.cpus_per_trial} CPU/thread per trial: {sweep:.1f} s")
    print(f"ratio sweep/sequential: {sweep / sequential:.2f}")


if __name__ == "__main__":
    main()
