"""Data-parallel training on CPU with gloo: averaged gradients equal the single-process gradient over the
union of the ranks' envs; a 2-rank ``torchrun`` run learns and resumes."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mbmix_fw.distributed.ddp import split_recipe_data
from mbmix_fw.errors import UserError

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("ddp_gradient_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_ranks(tmp_path: Path, world: int) -> list[dict]:
    outs = [tmp_path / f"w{world}_r{rank}.pt" for rank in range(world)]
    init = tmp_path / f"pg{world}"
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(rank), str(world), str(init), str(out)],
                              env=ENV, stderr=subprocess.PIPE, text=True) for rank, out in enumerate(outs)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    return [torch.load(out, weights_only=True) for out in outs]


def assert_close(a, b):
    for x, y in zip(a, b, strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    return run_ranks(tmp, 1)[0], run_ranks(tmp, 2)


def test_averaged_actor_and_critic_gradients_equal_the_union_gradient(results):
    single, ranks = results
    for rank in ranks:
        assert_close(rank["actor_grads"], single["actor_grads"])
        assert_close(rank["critic_grads"], single["critic_grads"])
        assert rank["actor_norm"] == pytest.approx(single["actor_norm"], rel=1e-4)
        assert rank["critic_norm"] == pytest.approx(single["critic_norm"], rel=1e-4)
    # the check is not vacuous: each rank's own half gives a different gradient
    assert single["actor_norm"] > 0 and single["critic_norm"] > 0


def test_every_rank_follows_rank_0s_plan(results):
    _, ranks = results
    assert [rank["planned_horizon"] for rank in ranks] == [2, 2]  # rank 1's own plan said 3


def test_observation_statistics_are_those_of_the_union(results):
    single, ranks = results
    for rank in ranks:
        assert_close(rank["obs_stats"], single["obs_stats"])


def test_a_non_finite_loss_on_one_rank_skips_the_update_on_every_rank(results):
    single, ranks = results
    assert single["skipped"] == 1  # the single process's own (last) rank is poisoned
    assert [rank["skipped"] for rank in ranks] == [1, 1]


def test_world_model_gradients_are_averaged_and_replicas_stay_equal(results):
    _, (r0, r1) = results
    mean_local = [(a + b) / 2 for a, b in zip(r0["model_local"], r1["model_local"], strict=True)]
    assert any(not torch.allclose(a, b) for a, b in zip(r0["model_local"], r1["model_local"]))
    assert_close(r0["model_at_step"], mean_local)
    assert_close(r1["model_at_step"], mean_local)
    assert r0["model_state"].keys() == r1["model_state"].keys()
    for key in r0["model_state"]:
        torch.testing.assert_close(r0["model_state"][key], r1["model_state"][key])


def test_the_env_batch_is_split_and_must_divide_evenly():
    data = {"run": {"seed": 3}, "env": {"kind": "pendulum", "num_envs": 64}}
    assert split_recipe_data(data, 1, 4, "r.toml")["env"]["num_envs"] == 16
    assert split_recipe_data(data, 1, 4, "r.toml")["run"]["seed"] == 3 + 100_003
    assert data["env"]["num_envs"] == 64  # the caller's data is untouched
    with pytest.raises(UserError, match="r.toml: env.num_envs: 64 envs cannot be split evenly over 3"):
        split_recipe_data(data, 0, 3, "r.toml")


def torchrun(*args: str, script: bool = False) -> subprocess.CompletedProcess:
    """2 ranks of ``-m mbmix_fw``, or with ``script=True`` of the installed ``mbmix-fw`` console script
    (``torchrun ... $(which mbmix-fw) run ...``, which must train data-parallel too)."""
    target = [str(Path(sys.executable).with_name("mbmix-fw"))] if script else ["-m", "mbmix_fw"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *target, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=ENV)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def eval_returns(run_dir: Path) -> list[tuple[int, float]]:
    with open(run_dir / "metrics.csv") as handle:
        return [(int(r["iteration"]), float(r["eval/return"])) for r in csv.DictReader(handle) if r["eval/return"]]


@pytest.mark.slow
def test_two_rank_run_learns_and_resumes(tmp_path):
    out = tmp_path / "ddp"
    torchrun("run", str(ROOT / "recipes" / "pendulum_shac.toml"), "--out", str(out), "--no-progress",
             "--set", "run.iterations=40", "--set", "run.eval_every=20", "--set", "run.checkpoint_every=20")
    assert json.loads((out / "data_parallel.json").read_text()) == {"world_size": 2}
    assert json.loads((out / "recipe.json").read_text())["env"]["num_envs"] == 64  # the total batch
    returns = eval_returns(out)
    # seed 0, 40 iterations: -1186 -> -877 (+309; one process, 64 envs: -1053). At 80 iterations it reached -794
    assert returns[-1][1] > returns[0][1] + 150, returns

    # resume: continue the finished run for 4 more iterations, as after an interruption
    kept = (out / "metrics.csv").read_text().splitlines()
    recipe = json.loads((out / "recipe.json").read_text())
    recipe["run"]["iterations"] = 44
    (out / "recipe.json").write_text(json.dumps(recipe))
    plain = subprocess.run([sys.executable, "-m", "mbmix_fw", "resume", str(out), "--no-progress"],
                           capture_output=True, text=True, env=ENV, timeout=300)
    assert plain.returncode == 2 and "torchrun --nproc_per_node=2" in plain.stderr, plain.stderr
    assert (out / "metrics.csv").read_text().splitlines() == kept  # refused before anything was written
    torchrun("resume", str(out), "--no-progress", script=True)
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[:len(kept)] == kept and len(lines) == len(kept) + 4


def fake_run_folder(tmp_path: Path, marker: str) -> Path:
    """What ``resume`` looks at before it reads anything: the recipe, the checkpoint and the rank marker."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.json").write_text("{}")
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    (run / "data_parallel.json").write_text(marker)
    return run


@pytest.mark.parametrize("marker, message", [
    ('{"world_size": 3}', "torchrun --nproc_per_node=3 -m mbmix_fw resume"),
    ('{"world_size": "two"}', "data_parallel.json: unreadable"),
    ("not json", "data_parallel.json: unreadable"),
])
def test_a_plain_resume_of_a_data_parallel_run_is_refused(tmp_path, capsys, marker, message):
    from mbmix_fw.commands.cli import main

    run = fake_run_folder(tmp_path, marker)
    assert main(["resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


SKIP_WORKER = Path(__file__).with_name("ddp_skip_worker.py")


def test_one_rank_going_non_finite_skips_on_every_rank_and_nothing_hangs(tmp_path):
    """Rank 1 alone produces a NaN loss, an empty minibatch, NaN action gradients, a NaN model batch and a
    NaN simulator iteration: both ranks skip the same updates and end with equal replicas (a rank left
    waiting in a collective would fail on the workers' gloo timeout). NaN action gradients on one rank
    only do not skip: the other rank's rows train."""
    outs = [tmp_path / f"skip_r{rank}.pt" for rank in range(2)]
    procs = [subprocess.Popen([sys.executable, str(SKIP_WORKER), str(rank), "2", str(tmp_path / "pg"), str(out)],
                              env=ENV, stderr=subprocess.PIPE, text=True) for rank, out in enumerate(outs)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    r0, r1 = (torch.load(out, weights_only=False) for out in outs)
    assert r0["flags"] == r1["flags"] == {"actor": 0, "critic": 2, "world model": 0}
    assert r0["model_skips"] == r1["model_skips"] == [1.0, 0.0]
    assert r0["history"][1]["guard/nonfinite_transitions"] == 0 < r1["history"][1]["guard/nonfinite_transitions"]
    assert r0["buffer"] > r1["buffer"] > 0  # rank 1 kept nothing of its NaN iteration
    for row0, row1 in zip(r0["history"][1:], r1["history"][1:]):  # same skips, iteration by iteration
        assert row0["guard/skipped_updates"] == row1["guard/skipped_updates"]
    assert r0["history"][1]["guard/skipped_updates"] > 0
    assert r0["state"].keys() == r1["state"].keys()
    for key, value in r0["state"].items():
        torch.testing.assert_close(value, r1["state"][key], rtol=0, atol=0, msg=key)
        assert torch.isfinite(value).all(), key


@pytest.mark.slow
def test_a_two_rank_run_logs_global_env_steps_and_evaluates_at_one_process_cadence(tmp_path):
    """Two ranks share the budget; ``env/steps`` counts both ranks' steps and ``eval_every_env_steps``
    evaluates where a one-process run of the same total batch would."""
    out = tmp_path / "ddp"
    torchrun("run", str(ROOT / "recipes" / "pendulum_shac.toml"), "--out", str(out), "--no-progress",
             "--set", "run.env_steps=8192", "--set", "run.eval_every_env_steps=2048", "--set", "estimator.horizon=32",
             "--set", "env.num_envs=64", "--set", "run.iterations=100")
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["env/steps"]) for r in rows[1:]] == [2048.0, 4096.0, 6144.0, 8192.0]
    assert [int(r["iteration"]) for r in rows if r["eval/return"]] == [0, 1, 2, 3, 4]


def test_actor_loss_and_model_rollback_use_the_union_of_the_ranks(tmp_path):
    """A rank whose every env diverged contributes nothing and does not stop the other (the averaged
    gradient is the mean over every healthy env of both ranks), and the rollback decides on the mean
    held-out error of the ranks that measured one."""
    outs = [tmp_path / f"union_r{rank}.pt" for rank in range(2)]
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).with_name("ddp_union_worker.py")), str(rank), "2",
                               str(tmp_path / "pg"), str(out)], env=ENV, stderr=subprocess.PIPE, text=True)
             for rank, out in enumerate(outs)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    r0, r1 = (torch.load(out, weights_only=False) for out in outs)
    union = -torch.arange(1.0, 4.0) / (4 * 3)  # d/dw of -(Σ_n w_n x_n) / (T · 3 healthy envs), rank 0's x
    torch.testing.assert_close(r0["grad"], union)
    torch.testing.assert_close(r1["grad"], union)
    assert r1["loss"] == 0.0  # no healthy env here: zero, not NaN (NaN would make every rank skip)
    assert r0["agreed"] == r1["agreed"] == 2.0 and r0["none_here"] == r1["none_here"] == 2.0
