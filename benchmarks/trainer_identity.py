"""Does a refactor of the training loop leave every run's numbers exactly as they were?

Runs a fixed set of short, fixed-seed recipes through the CLI (one thread, so the numbers are comparable
run to run; see README on thread counts), and keeps each run's ``metrics.csv`` without its time columns
(``time/*``: wall-clock, never reproducible). Run it on the old checkout and on the new one, then compare:

    python benchmarks/trainer_identity.py --out /tmp/before      # on the commit before the change
    python benchmarks/trainer_identity.py --out /tmp/after       # on the change
    python benchmarks/trainer_identity.py --compare /tmp/before /tmp/after

``--compare`` prints the number of differing cells per run (in the columns both sides have; a column only
one side has, a metric added or removed, is listed, not counted) and exits 1 if any differ. The cases cover
the paths of an iteration: the world model fitted, gated and branched (cloth MB-MIX, pendulum MB-MIX),
the agreement split (``agree``), the contact signal (``ahac``), whole-episode BPTT, and a run stopped,
extended and resumed from its checkpoint.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES: dict[str, tuple[str, list[str]]] = {
    "cloth_mix": ("recipes/cloth_mix.toml", [
        "run.iterations=8", "run.eval_every=4", "run.eval_envs=8", "run.checkpoint_every=4",
        "scheduler.warmup_iterations=2", "scheduler.model_error_gate=1e9"]),
    "pendulum_mbmix": ("recipes/pendulum_mbmix.toml", [
        "run.iterations=12", "run.eval_every=4", "run.checkpoint_every=6", "scheduler.warmup_iterations=3",
        "env.num_envs=16", "scheduler.model_fit_steps=4"]),
    "cloth_agree": ("recipes/cloth_agree.toml", ["run.env_steps=640", "run.eval_every_env_steps=320",
                                                 "run.eval_envs=8"]),
    "cloth_ahac": ("recipes/cloth_ahac.toml", ["run.env_steps=640", "run.eval_every_env_steps=320",
                                               "run.eval_envs=8"]),
    "pendulum_bptt": ("recipes/pendulum_bptt.toml", ["run.iterations=4", "run.eval_every=2"]),
}
RESUMED = ("recipes/pendulum_mix.toml", ["run.iterations=6", "run.checkpoint_every=3", "run.eval_every=3"], 10)
"""Run 6 iterations, raise ``run.iterations`` to 10 in ``recipe.json``, ``resume``."""


def _cli(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "mbmix_fw", *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def _keep_untimed(metrics_csv: Path, dest: Path) -> None:
    with metrics_csv.open(newline="") as f:
        rows = list(csv.reader(f))
    keep = [i for i, name in enumerate(rows[0]) if not name.startswith("time/")]
    with dest.open("w", newline="") as f:
        csv.writer(f).writerows([[row[i] for i in keep] for row in rows])


def record(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (recipe, sets) in CASES.items():
            run_dir = Path(tmp) / name
            _cli("run", recipe, "--out", str(run_dir), "--no-progress", *(f"--set={s}" for s in sets))
            _keep_untimed(run_dir / "metrics.csv", out / f"{name}.csv")
            print(f"{name}: recorded", flush=True)
        recipe, sets, more = RESUMED
        run_dir = Path(tmp) / "resumed"
        _cli("run", recipe, "--out", str(run_dir), "--no-progress", *(f"--set={s}" for s in sets))
        saved = json.loads((run_dir / "recipe.json").read_text())
        saved["run"]["iterations"] = more
        (run_dir / "recipe.json").write_text(json.dumps(saved))
        _cli("resume", str(run_dir), "--no-progress")
        _keep_untimed(run_dir / "metrics.csv", out / "resumed.csv")
        print("resumed: recorded", flush=True)


def compare(a: Path, b: Path) -> int:
    differing = 0
    for left in sorted(a.glob("*.csv")):
        right = b / left.name
        if not right.exists():
            print(f"{left.stem}: missing in {b}")
            differing += 1
            continue
        rows_a, rows_b = (list(csv.DictReader(p.open(newline=""))) for p in (left, right))
        shared = [name for name in rows_a[0] if name in rows_b[0]]  # a new metric is not a changed number
        cells = sum(ra[name] != rb[name] for ra, rb in zip(rows_a, rows_b) for name in shared)
        cells += abs(len(rows_a) - len(rows_b))
        only = sorted(set(rows_a[0]) ^ set(rows_b[0]))
        print(f"{left.stem}: {len(rows_a)} rows, {cells} differing cells"
              + (f" (columns on one side only: {', '.join(only)})" if only else ""))
        differing += cells
    return 1 if differing else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.out is None:
        parser.error("give --out DIR or --compare BEFORE AFTER")
    if args.out.exists():
        shutil.rmtree(args.out)
    record(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
