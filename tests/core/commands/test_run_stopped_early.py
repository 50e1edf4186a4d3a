"""A run that stopped before its first checkpoint, or on a full disk, leaves no dead end (issue 24, item 8).

Decided: such a folder is still a run folder. ``run`` refuses it and says to resume it; ``resume`` starts
the run again from iteration 0 in the same folder (its leftover ``metrics.csv`` and ``tb/`` removed), so it
ends exactly where an uninterrupted run ends. A full disk (here a file-size limit: ``RLIMIT_FSIZE`` with
``SIGXFSZ`` ignored, so writes fail with ``EFBIG``, errno 27) ends the run with one line, exit 2, not an
"internal error" with a TensorBoard thread's traceback; once there is room, ``resume`` continues.
"""
from __future__ import annotations

import csv
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mbmix_fw.building.registry import load_registry
from mbmix_fw.building.runs import plan_run, start_run
from mbmix_fw.commands.cli import main

RECIPE = """
[run]
seed = 4
iterations = {iterations}
checkpoint_every = {checkpoint_every}
eval_envs = 2
[env]
kind = "pendulum"
num_envs = 4
episode_length = 10
[estimator]
kind = "shac"
horizon = 4
[critic]
iterations = 1
minibatches = 2
"""
CLI = [sys.executable, "-m", "mbmix_fw"]


def recipe(tmp_path: Path, iterations: int = 4, checkpoint_every: int = 2) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(RECIPE.format(iterations=iterations, checkpoint_every=checkpoint_every), encoding="utf-8")
    return path


def stopped_before_first_checkpoint(path: Path, out: Path) -> None:
    """``mbmix-fw run`` interrupted as its first checkpoint was about to be written."""
    registry = load_registry()
    trainer = start_run(*plan_run(path, registry, out=out), registry, progress=False).trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    trainer.save_checkpoint = interrupted
    with pytest.raises(KeyboardInterrupt):
        trainer.train()


def iterations(run_dir: Path) -> list[int]:
    with (run_dir / "metrics.csv").open(encoding="utf-8") as handle:
        return [int(row["iteration"]) for row in csv.DictReader(handle)]


def test_run_refuses_and_resume_starts_again_exactly(tmp_path, capsys):
    path = recipe(tmp_path)
    assert main(["run", str(path), "--out", str(tmp_path / "full"), "--no-progress"]) == 0
    cut = tmp_path / "cut"
    stopped_before_first_checkpoint(path, cut)
    assert (cut / "recipe.json").is_file() and not (cut / "checkpoints" / "last.pt").exists()
    assert (cut / "tb").is_dir()
    capsys.readouterr()

    assert main(["run", str(path), "--out", str(cut), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (f"mbmix-fw: error: {cut}: already holds a run; continue it with "
                                               f"'mbmix-fw resume {cut}', choose another folder with --out, or "
                                               f"remove it")
    assert main(["resume", str(cut), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"{cut / 'checkpoints' / 'last.pt'}: none yet (the run stopped before its first checkpoint); " \
           f"starting it again from iteration 0" in err
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    resumed = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)
    for entry in ("policy", "critic", "actor_opt"):
        assert str(full[entry]) == str(resumed[entry]) if entry == "actor_opt" else \
            all(torch.equal(full[entry][k], resumed[entry][k]) for k in full[entry])
    assert iterations(cut) == [0, 1, 2, 3, 4]
    assert len(list((cut / "tb").iterdir())) == 1, "the stopped run's TensorBoard events were kept"


def test_a_folder_with_only_recipe_json_is_a_run_folder(tmp_path, capsys):
    """Killed between writing ``recipe.json`` and its first metrics: not "someone else's files"."""
    path = recipe(tmp_path, iterations=1)
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    for name in ("metrics.csv", "plugins.json", "checkpoints/last.pt"):
        (tmp_path / "run" / name).unlink()
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "already holds a run; continue it with 'mbmix-fw resume" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "run"), "--no-progress"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
def test_kill_9_before_the_first_checkpoint_then_resume(tmp_path):
    path = recipe(tmp_path, iterations=400, checkpoint_every=400)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([*CLI, "run", str(path), "--out", str(cut), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (cut / "tb").is_dir():
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / "checkpoints" / "last.pt").exists()
    data = (cut / "recipe.json").read_text(encoding="utf-8").replace('"iterations": 400', '"iterations": 2')
    (cut / "recipe.json").write_text(data, encoding="utf-8")  # any edit: nothing was trained yet
    done = subprocess.run([*CLI, "resume", str(cut), "--no-progress"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 2


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow  # two CLI processes
@pytest.mark.parametrize("limit, checkpoint_every", [(2_000, 100), (40_000, 2)],
                         ids=["tensorboard events", "checkpoint"])
def test_a_full_disk_is_one_line_and_the_folder_resumes(tmp_path, limit, checkpoint_every):
    path = recipe(tmp_path, iterations=8, checkpoint_every=checkpoint_every)
    out = tmp_path / "run"
    full = subprocess.run([*CLI, "run", str(path), "--out", str(out), "--no-progress"], capture_output=True,
                          text=True, preexec_fn=_file_size_limit(limit))
    lines = full.stderr.strip().splitlines()
    assert full.returncode == 2, full.stderr
    assert lines == [f"mbmix-fw: error: {out}: disk full / file too large while writing the run (File too large, "
                     f"errno 27); free space (or raise the file-size limit), then 'mbmix-fw resume {out}' continues "
                     f"from its last checkpoint (or starts again if it has none)"], full.stderr
    done = subprocess.run([*CLI, "resume", str(out), "--no-progress"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 8


@pytest.mark.slow  # two CLI processes
def test_no_room_for_recipe_json_leaves_an_empty_folder_to_run_again(tmp_path):
    path = recipe(tmp_path, iterations=2)
    out = tmp_path / "run"
    failed = subprocess.run([*CLI, "run", str(path), "--out", str(out), "--no-progress"], capture_output=True,
                            text=True, preexec_fn=_file_size_limit(600))
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.strip().splitlines() == [
        f"mbmix-fw: error: {out}: disk full / file too large while writing the run (File too large, errno 27); "
        f"free space and try again"]
    assert [p.name for p in out.iterdir()] == [".writer.lock"]  # the writer lock: no results
    again = subprocess.run([*CLI, "run", str(path), "--out", str(out), "--no-progress"], capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr


def test_no_room_anywhere_else_is_one_line_too(tmp_path, monkeypatch, capsys):
    """A full disk the run did not meet while training (here: writing a report) is no internal error."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "curves.png"))

    monkeypatch.setattr("mbmix_fw.commands.handlers.cmd_validate", full)
    assert main(["validate", str(recipe(tmp_path))]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"mbmix-fw: error: {tmp_path / 'curves.png'}: disk full / file too large (No space left on device, "
        f"errno 28); free space and try again"]
