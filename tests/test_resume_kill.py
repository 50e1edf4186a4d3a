"""A run killed with SIGKILL mid-training and resumed ends exactly where an uninterrupted run ends."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

RECIPE = """
[run]
seed = 3
iterations = 40
checkpoint_every = 4
eval_envs = 4
[env]
kind = "pendulum"
num_envs = 8
episode_length = 30
[estimator]
kind = "shac"
horizon = 8
[critic]
iterations = 2
minibatches = 2
"""

CLI = [sys.executable, "-m", "mbmix_fw"]


def final_parameters(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["iteration"] == 40
    return {**state["policy"], **{f"critic.{k}": v for k, v in state["critic"].items()}}


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted_run(tmp_path):
    recipe = tmp_path / "pendulum_small.toml"
    recipe.write_text(RECIPE)
    subprocess.run([*CLI, "run", str(recipe), "--out", str(tmp_path / "full"), "--no-progress"],
                   check=True, capture_output=True)

    cut = tmp_path / "cut"
    proc = subprocess.Popen([*CLI, "run", str(recipe), "--out", str(cut), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = cut / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["iteration"] >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(checkpoint, weights_only=True)["iteration"]
    assert 8 <= killed_at < 40

    subprocess.run([*CLI, "resume", str(cut), "--no-progress"], check=True, capture_output=True)
    full, resumed = final_parameters(tmp_path / "full"), final_parameters(cut)
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    rows = (cut / "metrics.csv").read_text().strip().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(0, 41))
