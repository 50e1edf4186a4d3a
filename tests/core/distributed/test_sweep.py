"""``mbmix-fw sweep`` on a local Ray (one Ray session for the module): a 2 × 2 sweep of tiny pendulum runs,
skip on rerun, resume of an interrupted sweep, a failing trial beside passing ones, grouped report."""
from __future__ import annotations

import csv
import ipaddress
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import ray  # the [ray] extra is part of [test]: CI runs these
import torch

import mbmix_fw as mb
from mbmix_fw.building.build import make_trainer, write_run_files
from mbmix_fw.commands.cli import main
from mbmix_fw.distributed.grid import plan_sweep
from mbmix_fw.commands.report import _group_key, expand_run_dirs
from mbmix_fw.distributed.summary import SCORE
from mbmix_fw.maths.statistics import summarize_scores

TINY = """
[run]
iterations = {iterations}
checkpoint_every = 2
eval_envs = 2
device = "cpu"
out = "{root}/{{name}}"

[env]
kind = "pendulum"
num_envs = 4
episode_length = 16

[estimator]
kind = "shac"
horizon = 4

[policy]
hidden = [8]

[critic]
hidden = [8]
iterations = 1
minibatches = 1
"""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=100 * 2**20)
    yield
    ray.shutdown()


def tiny_recipe(tmp_path: Path, iterations: int = 2) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(iterations=iterations, root=tmp_path / "runs"))
    return path


def sweep(recipe: Path, *args: str) -> int:
    return main(["sweep", str(recipe), "--grid", "estimator.horizon=4,8", "--seeds", "0-1", "--name", "s", *args])


def finals(trial: Path) -> dict[str, float]:
    return json.loads((trial / "done.json").read_text())["final"]


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


TRIALS = ["horizon-4_seed-0", "horizon-4_seed-1", "horizon-8_seed-0", "horizon-8_seed-1"]


def test_two_by_two_sweep_then_rerun_skips_everything(local_ray, tmp_path, capsys):
    recipe = tiny_recipe(tmp_path)
    assert sweep(recipe) == 0
    root = tmp_path / "runs" / "s"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == TRIALS
    for name in TRIALS:
        data = json.loads((root / name / "recipe.json").read_text())
        assert data["estimator"]["horizon"] == int(name.split("_")[0].split("-")[1])
        assert data["run"]["seed"] == int(name[-1]) and data["run"]["out"] == str(root / name)
        assert "sweep" not in data
        assert (root / name / "checkpoints" / "last.pt").is_file() and (root / name / "metrics.csv").is_file()
    out = capsys.readouterr().out
    assert "[4/4 done, 0 running, 0 failed" in out and "best so far: horizon-" in out

    with open(root / "summary.csv") as handle:
        rows = {r["point"]: r for r in csv.DictReader(handle)}
    assert list(rows) == ["horizon-4", "horizon-8"]
    for point, row in rows.items():
        returns = [finals(root / f"{point}_seed-{s}")["eval/return"] for s in (0, 1)]
        assert float(row["eval/return_mean"]) == pytest.approx(statistics.mean(returns))
        assert float(row["eval/return_std"]) == pytest.approx(statistics.stdev(returns))
        assert row["estimator.horizon"] == point.split("-")[1] and row["seeds_finished"] == "2"
        scores = [SCORE.of_run(root / f"{point}_seed-{s}") for s in (0, 1)]
        expected = summarize_scores({point: scores})[point]
        assert [float(row[f"score_{k}"]) for k in ("iqm", "low", "high")] == pytest.approx(
            [expected.iqm, expected.low, expected.high])

    stamps = {name: (root / name / "checkpoints" / "last.pt").stat().st_mtime_ns for name in TRIALS}
    assert sweep(recipe) == 0  # nothing left to do: no trial runs again
    assert "4 of 4 trials already finished, skipped" in capsys.readouterr().out
    assert stamps == {name: (root / name / "checkpoints" / "last.pt").stat().st_mtime_ns for name in TRIALS}

    # the same sweep name with another recipe: refused before anything runs
    assert sweep(recipe, "--set", "run.iterations=3") == 2
    assert "s/horizon-4_seed-0: holds a run of a different recipe (run.iterations: 2 there, 3 now)" in (
        capsys.readouterr().err)

    # report --group on the sweep folder: one curve per grid point, seeds grouped
    dirs = expand_run_dirs([root])
    assert sorted(d.name for d in dirs) == TRIALS
    assert len({_group_key(d) for d in dirs}) == 2
    png = tmp_path / "curves.png"
    assert main(["report", str(root), "--group", "--out", str(png)]) == 0 and png.stat().st_size > 0


def test_rerun_resumes_an_interrupted_sweep(local_ray, tmp_path, crash_after_checkpoint, capsys):
    recipe = tiny_recipe(tmp_path, iterations=4)
    registry = mb.load_registry()
    plan = plan_sweep(recipe, registry, grid=["estimator.horizon=4,8"], seeds="0-1", name="s")
    by_name = {t.name: t for t in plan.trials}
    # interrupted trial: killed after its checkpoint at iteration 2
    partial = plan.root / "horizon-4_seed-0"
    trainer = make_trainer(by_name[partial.name].recipe, partial, "cpu", registry, progress=False)
    write_run_files(partial, by_name[partial.name].recipe, registry)
    with torch.no_grad():  # a fingerprint: a restart from scratch could not reproduce these rows
        next(trainer.policy.parameters()).add_(0.5)
    crash_after_checkpoint(trainer, 2)
    rows_before = metric_rows(partial)
    assert [r["iteration"] for r in rows_before] == ["0", "1", "2"]
    # killed before its first checkpoint: stale metrics.csv only
    fresh = plan.root / "horizon-8_seed-0"
    fresh.mkdir(parents=True)
    (fresh / "metrics.csv").write_text("iteration,eval/return\n0,123456.0\n1,123456.0\n")
    (fresh / "tb").mkdir()
    (fresh / "tb" / "events.out.tfevents.stale").write_bytes(b"")

    assert sweep(recipe) == 0
    out = capsys.readouterr().out
    assert "resuming horizon-4_seed-0" in out and "starting horizon-8_seed-0" in out
    rows_after = metric_rows(partial)  # the checkpointed rows are kept as they were, two new ones follow
    assert [r["iteration"] for r in rows_after] == ["0", "1", "2", "3", "4"]
    for before, after in zip(rows_before, rows_after):
        assert before == {k: after[k] for k in before}
    assert "123456" not in (fresh / "metrics.csv").read_text()
    assert not (fresh / "tb" / "events.out.tfevents.stale").exists()
    assert all(finals(plan.root / name)["iteration"] == 4 for name in TRIALS)


def test_a_failing_trial_is_reported_and_the_others_finish(local_ray, tmp_path, capsys):
    recipe = tiny_recipe(tmp_path)
    broken = tmp_path / "runs" / "s" / "horizon-8_seed-1"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")  # a corrupted checkpoint

    assert sweep(recipe) == 1
    captured = capsys.readouterr()
    assert "FAILED horizon-8_seed-1:" in captured.out and "[3/4 done, " in captured.out
    assert "trial(s) failed" in captured.err
    assert (broken / "error.txt").is_file() and not (broken / "done.json").exists()
    for name in TRIALS[:3]:
        assert (tmp_path / "runs" / "s" / name / "done.json").is_file()
    with open(tmp_path / "runs" / "s" / "summary.csv") as handle:
        rows = {r["point"]: r for r in csv.DictReader(handle)}
    assert rows["horizon-8"]["seeds_finished"] == "1" and rows["horizon-4"]["seeds_finished"] == "2"
    assert math.isnan(float(rows["horizon-8"]["eval/return_std"]))  # one seed: no spread


# ---- a local sweep's Ray stays on this machine ----
LISTENERS = """
import ipaddress, psutil
from mbmix_fw.distributed.sweep import connect, import_ray
ray = import_ray(local=True)
assert connect(ray, None)
processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
for process in processes:
    for connection in process.net_connections(kind="inet"):
        if connection.status == psutil.CONN_LISTEN:
            print(process.name(), connection.laddr.ip, connection.laddr.port)
ray.shutdown()
"""


@pytest.mark.parametrize("address", [None, "auto"])
def test_a_local_sweep_confines_its_ray_to_the_loopback(tmp_path, monkeypatch, address):
    from mbmix_fw.distributed import sweep

    for name in sweep.LOOPBACK_ONLY:
        monkeypatch.delenv(name, raising=False)
    seen = {}

    def connect(ray, given):  # what the sweep would start Ray with
        seen.update(address=given, env={name: os.environ.get(name) for name in sweep.LOOPBACK_ONLY})
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "connect", connect)
    plan = plan_sweep(tiny_recipe(tmp_path), mb.load_registry(), name="s", address=address)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(plan)
    local = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    assert seen == {"address": address, "env": local if address is None else {name: None for name in local}}


@pytest.mark.slow
def test_a_local_sweeps_ray_listens_on_the_loopback_only():
    """Started as ``mbmix-fw sweep`` starts it, in a fresh process (Ray reads the setting on import)."""
    result = subprocess.run([sys.executable, "-c", LISTENERS], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    listeners = [line.split() for line in result.stdout.splitlines()]
    assert any(name == "gcs_server" for name, _, _ in listeners), listeners
    assert all(ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback for _, ip, _ in listeners), listeners
