"""One writer per run folder: real processes race for a folder, a second writer is refused with one line
naming the holder and writes nothing, and the lock of a killed writer is taken over."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mbmix_fw.errors import UserError
from mbmix_fw.training.folder_lock import hold_folder, refuse_if_held, release_folder
from mbmix_fw.training.run_folder import WRITER_LOCK

HOLDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from mbmix_fw.errors import UserError
    from mbmix_fw.training.folder_lock import hold_folder
    folder, go, seconds = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    while not go.exists():
        time.sleep(0.001)
    try:
        hold_folder(folder)
    except UserError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    print("holding", flush=True)
    if sys.argv[4:] == ["fork"]:  # a child inherits the lock, the holder itself dies at once
        child = os.fork()
        if child == 0:
            time.sleep(seconds)
            os._exit(0)
        print(child, flush=True)
        os._exit(0)
    time.sleep(seconds)
""")


def start_holder(tmp_path: Path, folder: Path, seconds: float = 60.0, *extra: str) -> subprocess.Popen:
    """A process that holds ``folder``'s lock for ``seconds``; returns once it holds it."""
    go = tmp_path / "go"
    go.touch()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(go), str(seconds), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "holding\n", proc.stderr.read()
    return proc


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_processes_racing_for_one_folder_one_wins_the_other_is_told_who(tmp_path):
    folder, go = tmp_path / "run", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(go), "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(1.0)  # both are waiting at the start line (imports done)
    go.touch()
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    assert sorted(rc for rc, _, _ in results) == [0, 2], results
    winner = procs[[rc for rc, _, _ in results].index(0)]
    (rc, out, err), = [r for r in results if r[0] == 2]
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"{folder}: is being written by pid {winner.pid} on {socket.gethostname()}, started 20")
    assert f": -c {folder} {go} 3; " in err  # its command line (python -c SCRIPT has "-c" as argv[0])


def test_a_second_writer_is_refused_and_writes_nothing(tmp_path):
    folder = tmp_path / "run"
    holder = start_holder(tmp_path, folder)
    try:
        (folder / "metrics.csv").write_text("iteration\n0\n")
        before = snapshot(folder)
        for attempt in (hold_folder, refuse_if_held):
            with pytest.raises(UserError, match=rf"^{folder}: is being written by pid {holder.pid} on "):
                attempt(folder)
        assert snapshot(folder) == before
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_writer_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    holder = start_holder(tmp_path, folder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads((folder / WRITER_LOCK).read_text())["pid"] == holder.pid  # its line is still there
    hold_folder(folder)
    try:
        assert json.loads((folder / WRITER_LOCK).read_text())["pid"] == os.getpid()
    finally:
        release_folder(folder)


def test_a_child_that_inherited_the_lock_of_a_dead_writer_is_named(tmp_path):
    """The holder forks and dies: its child still holds the lock, and may still write."""
    folder = tmp_path / "run"
    holder = start_holder(tmp_path, folder, 60.0, "fork")
    child = int(holder.stdout.readline())
    holder.wait()
    try:
        with pytest.raises(UserError, match=rf"inherited the lock of pid {holder.pid} \(no longer running"):
            hold_folder(folder)
    finally:
        os.kill(child, signal.SIGKILL)


def test_holding_counts_within_a_process(tmp_path):
    folder = tmp_path / "run"
    hold_folder(folder)
    hold_folder(folder)  # a sweep trial, then the run it starts
    release_folder(folder)
    probe = [sys.executable, "-c", "import sys; from mbmix_fw.training.folder_lock import refuse_if_held; "
                                   "refuse_if_held(sys.argv[1])", str(folder)]
    assert subprocess.run(probe, capture_output=True).returncode != 0  # still held once
    release_folder(folder)
    assert subprocess.run(probe, capture_output=True).returncode == 0


# ---- the commands: run against run, resume against run ----
RECIPE = """
[run]
seed = 3
iterations = {iterations}
checkpoint_every = 1
eval_envs = 2
[env]
kind = "pendulum"
num_envs = 4
episode_length = 20
[estimator]
kind = "shac"
horizon = 4
[critic]
iterations = 1
minibatches = 1
"""
CLI = [sys.executable, "-m", "mbmix_fw"]


@pytest.mark.slow
def test_two_runs_started_together_on_one_folder_make_one_run(tmp_path):
    recipe = tmp_path / "race.toml"
    recipe.write_text(RECIPE.format(iterations=30))
    out = tmp_path / "x"
    procs = [subprocess.Popen([*CLI, "run", str(recipe), "--out", str(out), "--no-progress", "--set",
                               f"run.seed={seed}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (1, 2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    assert sorted(rc for rc, _, _ in results) == [0, 2], results
    winner_seed = (1, 2)[[rc for rc, _, _ in results].index(0)]
    (_, _, err), = [r for r in results if r[0] == 2]
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"mbmix-fw: error: {out}: "), err
    assert json.loads((out / "recipe.json").read_text())["run"]["seed"] == winner_seed
    iterations = [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert iterations == [str(i) for i in range(31)]


@pytest.mark.slow
def test_resume_and_run_are_refused_while_a_run_writes_the_folder_then_resume_takes_over(tmp_path, capsys):
    from mbmix_fw.commands.cli import main

    recipe = tmp_path / "long.toml"
    recipe.write_text(RECIPE.format(iterations=100_000))
    out = tmp_path / "x"
    proc = subprocess.Popen([*CLI, "run", str(recipe), "--out", str(out), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "last.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)
        for argv in (["resume", str(out)], ["run", str(recipe), "--out", str(out)]):
            assert main([*argv, "--no-progress"]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"mbmix-fw: error: {out}: is being written by pid {proc.pid} on ") and \
                   len(err.strip().splitlines()) == 1, err
    finally:
        proc.kill()
        proc.wait()
    # killed: its lock died with it. The checkpoint's iteration becomes the end, so resume only restores.
    import torch

    done = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["iteration"]
    saved = json.loads((out / "recipe.json").read_text())
    saved["run"]["iterations"] = done
    (out / "recipe.json").write_text(json.dumps(saved))
    assert main(["resume", str(out), "--no-progress"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert json.loads((out / WRITER_LOCK).read_text())["pid"] == os.getpid()
    release_folder(out)


def test_a_sweep_trial_on_a_folder_another_process_writes_fails_and_touches_nothing(tmp_path):
    from mbmix_fw.building.recipe import load_recipe
    from mbmix_fw.building.registry import load_registry
    from mbmix_fw.distributed.trial import run_trial

    recipe = tmp_path / "trial.toml"
    recipe.write_text(RECIPE.format(iterations=2))
    data = load_recipe(recipe, load_registry()).model_dump(mode="json")
    folder = tmp_path / "trial"
    holder = start_holder(tmp_path, folder)
    try:
        (folder / "metrics.csv").write_text("iteration\n0\n")  # the other sweep's run, before its checkpoint
        before = snapshot(folder)
        result = run_trial(data, str(folder))
        assert result["status"] == "failed"
        assert result["error"].startswith(f"UserError: {folder}: is being written by pid {holder.pid} on ")
        assert snapshot(folder) == before  # its metrics.csv not removed as stale, no error.txt
    finally:
        holder.kill()
        holder.wait()
