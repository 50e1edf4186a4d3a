"""The same numbers from the same seed: a run is bit-identical to itself on one machine and thread count,
``run.threads`` makes it independent of the thread count the process was started with, and every run
folder records the thread count and versions it ran with (``environment.json``)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--set", "run.iterations=4", "--set", "scheduler.warmup_iterations=1", "--set", "env.num_envs=16",
         "--set", "run.eval_every=2", "--set", "scheduler.model_fit_steps=2", "--no-progress"]


def run(out: Path, omp_threads: int, *sets: str) -> list[list[str]]:
    env = {**os.environ, "OMP_NUM_THREADS": str(omp_threads), "MKL_NUM_THREADS": str(omp_threads)}
    subprocess.run([sys.executable, "-m", "mbmix_fw", "run", str(ROOT / "recipes" / "pendulum_mbmix.toml"),
                    "--out", str(out), *SMALL, *sets], env=env, check=True, capture_output=True)
    with (out / "metrics.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    timed = {i for i, name in enumerate(rows[0]) if name.startswith("time/")}
    return [[cell for i, cell in enumerate(row) if i not in timed] for row in rows]


@pytest.mark.slow  # four CLI processes
def test_run_threads_makes_the_numbers_independent_of_the_process_thread_count(tmp_path):
    one = run(tmp_path / "one", 1, "--set", "run.threads=1")
    again = run(tmp_path / "again", 1, "--set", "run.threads=1")
    assert one == again  # one machine, one thread count: bit-identical to itself
    assert run(tmp_path / "two", 2, "--set", "run.threads=1") == one
    recorded = json.loads((tmp_path / "two" / "environment.json").read_text())
    assert [e["event"] for e in recorded] == ["run"] and recorded[0]["torch_threads"] == 1
    assert recorded[0]["thread_variables"]["OMP_NUM_THREADS"] == "2" and "torch" in recorded[0]["packages"]


def test_every_run_and_resume_records_its_thread_count(tmp_path):
    import torch

    from mbmix_fw.commands.cli import main

    recipe = tmp_path / "r.toml"
    recipe.write_text((ROOT / "recipes" / "pendulum_shac.toml").read_text())
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        assert main(["run", str(recipe), "--out", str(out), "--no-progress", "--set", "run.iterations=1",
                     "--set", "run.threads=1"]) == 0
        saved = json.loads((out / "recipe.json").read_text())
        saved["run"]["iterations"] = 2
        (out / "recipe.json").write_text(json.dumps(saved))
        assert main(["resume", str(out), "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    entries = json.loads((out / "environment.json").read_text())
    assert [(e["event"], e["torch_threads"]) for e in entries] == [("run", 1), ("resume", 1)]
