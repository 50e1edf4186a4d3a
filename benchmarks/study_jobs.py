"""What every learning-study script shares: is a run folder finished, run the jobs a few at a time, report.

The study scripts (``learning_study.py``, ``stiffness_study.py``, ``hmax_study.py``) each train many runs as
``mbmix-fw run`` subprocesses and tabulate them. Why one module: "finished" must mean the same thing for all
of them (a study stopped at a deadline and started again reuses exactly the runs that completed), and a failed
run must be reported the same way — named, counted in the exit code, left out of the table, never silently
dropped. A sibling module, not a library one: it knows the study scripts' conventions (run folders, JSON and
markdown outputs), which the framework does not.
"""
from __future__ import annotations

import concurrent.futures
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence


def finished(out: Path) -> bool:
    """Whether ``out`` holds a finished run: its last checkpoint, and a last metrics row with a wall time
    (written once the run's final iteration is logged; a killed run's last row has none)."""
    metrics = out / "metrics.csv"
    if not (out / "checkpoints" / "last.pt").exists() or not metrics.exists():
        return False
    rows = list(csv.DictReader(metrics.open()))
    return bool(rows) and rows[-1].get("time/wall_s") not in (None, "")


def run_jobs(jobs: Iterable[tuple], run_one: Callable[..., dict], parallel: int) -> list[dict]:
    """``run_one(*job)`` for every job, ``parallel`` at a time, results in the jobs' order. A job whose
    result has an ``"error"`` key failed; :func:`report` names it."""
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(lambda job: run_one(*job), jobs))


def report(results: Sequence[dict], table: Callable[[list[dict]], str], describe: Callable[[dict], str], *,
           json_path: Path | None, markdown_path: Path | None) -> int:
    """Print one ``FAILED <describe(run)>: <error>`` line per failed run, write the finished runs to
    ``json_path`` and ``table(finished runs)`` to ``markdown_path`` (each when given), print the table.
    Returns the exit code: 1 when any run failed, else 0."""
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"FAILED {describe(r)}: {r['error']}")
    ok = [r for r in results if "error" not in r]
    if json_path is not None:
        json_path.write_text(json.dumps(ok, indent=1))
    text = table(ok) if ok else "no finished runs"
    print(text)
    if markdown_path is not None:
        markdown_path.write_text(text + "\n")
    return 1 if failed else 0


REPO = Path(__file__).resolve().parents[1]


def train(recipe: str | Path, out: Path, seed: int, sets: Sequence[str]) -> list[str] | None:
    """Train one run, ``python -m mbmix_fw run RECIPE --out OUT`` with ``run.seed`` and the ``--set``
    overrides, one torch thread (so runs side by side do not fight over cores and scores do not depend on how
    many run at once). Returns None on success, else the run's last stderr line (its one-line error).

    An unfinished run already in ``out`` (a study killed mid-run) is removed first and the run starts over:
    ``mbmix-fw run`` refuses a folder that holds a run, and a study's runs have no checkpoints worth resuming
    (they checkpoint at the end), so restarting the study would otherwise fail every run it had cut short."""
    if out.exists() and not finished(out):
        shutil.rmtree(out)
    args = [sys.executable, "-m", "mbmix_fw", "run", str(REPO / recipe), "--out", str(out), "--no-progress",
            "--set", f"run.seed={seed}", *(x for s in sets for x in ("--set", s))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO)
    return None if done.returncode == 0 else done.stderr.strip().splitlines()[-1:]
