"""A run killed with SIGKILL mid-training and resumed ends exactly where an uninterrupted run ends: a
model-free run, and an MB-MIX run killed after its world model was fitted (which could not be resumed at
all before: issue 24, item 1). ``tests/core/training/test_resume_matrix.py`` covers every shipped combination in process."""
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

MBMIX_RECIPE = """
[run]
seed = 3
iterations = 30
checkpoint_every = 2
eval_envs = 2
[env]
kind = "pendulum"
num_envs = 4
episode_length = 16
[world_model]
kind = "sobolev_mlp"
hidden = [16]
batch_size = 16
buffer_capacity = 512
[estimator]
kind = "mix"
lam = 0.9
horizon = 4
[scheduler]
kind = "dyna"
model_branches = 4
model_fit_steps = 2
warmup_iterations = 1
[policy]
hidden = [16]
[critic]
hidden = [16]
iterations = 1
minibatches = 2
"""

CLI = [sys.executable, "-m", "mbmix_fw"]


def final_parameters(run_dir: Path, iterations: int = 40) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["iteration"] == iterations
    tensors = {**state["policy"], **{f"critic.{k}": v for k, v in state["critic"].items()}}
    model = state["world_model"] or {}
    tensors.update({f"world_model.{k}": v for k, v in model.items() if isinstance(v, torch.Tensor)})
    moments = model.get("_extra_state", {}).get("optimizer", {}).get("state", {})  # the fit's Adam moments
    tensors.update({f"world_model.adam.{i}.{k}": v for i, s in moments.items() for k, v in s.items()})
    return tensors


def kill_after_checkpoint(recipe: Path, cut: Path, at_least: int, total: int) -> int:
    """Start ``mbmix-fw run``, SIGKILL it once its checkpoint has reached ``at_least`` iterations; the
    iteration of the checkpoint it left."""
    proc = subprocess.Popen([*CLI, "run", str(recipe), "--out", str(cut), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = cut / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["iteration"] >= at_least:
                break
        except (OSError, RuntimeError, EOFError):  # replaced while being read: look again
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(checkpoint, weights_only=True)["iteration"]
    assert at_least <= killed_at < total
    return killed_at


@pytest.mark.slow
def test_kill_9_after_the_world_model_was_fitted_then_resume_matches_uninterrupted_run(tmp_path):
    recipe = tmp_path / "pendulum_mbmix_small.toml"
    recipe.write_text(MBMIX_RECIPE)
    subprocess.run([*CLI, "run", str(recipe), "--out", str(tmp_path / "full"), "--no-progress"],
                   check=True, capture_output=True)
    cut = tmp_path / "cut"
    kill_after_checkpoint(recipe, cut, at_least=4, total=30)  # fitted from iteration 1 (warmup_iterations)
    done = subprocess.run([*CLI, "resume", str(cut), "--no-progress"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    full, resumed = final_parameters(tmp_path / "full", 30), final_parameters(cut, 30)
    assert any(name.startswith("world_model.adam.") for name in full)  # killed after the model was fitted
    assert full.keys() == resumed.keys()
    assert [k for k in full if not torch.equal(full[k], resumed[k])] == []


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted_run(tmp_path):
    recipe = tmp_path / "pendulum_small.toml"
    recipe.write_text(RECIPE)
    subprocess.run([*CLI, "run", str(recipe), "--out", str(tmp_path / "full"), "--no-progress"],
                   check=True, capture_output=True)

    cut = tmp_path / "cut"
    kill_after_checkpoint(recipe, cut, at_least=8, total=40)

    subprocess.run([*CLI, "resume", str(cut), "--no-progress"], check=True, capture_output=True)
    full, resumed = final_parameters(tmp_path / "full"), final_parameters(cut)
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    rows = (cut / "metrics.csv").read_text().strip().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(0, 41))
