"""Run-folder writes are atomic: a write that fails at any point leaves the previous file and no temporary."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from mbmix_fw.training import run_folder
from mbmix_fw.training.checkpoint import load_checkpoint_file, save_checkpoint_file
from mbmix_fw.training.metrics import MetricsLog
from mbmix_fw.training.run_folder import write_atomic, write_json_atomic, write_text_atomic


def leftovers(folder: Path, keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


def test_writes_create_the_folder_and_the_content(tmp_path):
    path = write_json_atomic(tmp_path / "a" / "b.json", {"x": [1, 2]})
    assert json.loads(path.read_text()) == {"x": [1, 2]} and path.read_text().endswith("\n")
    assert write_text_atomic(path, "new").read_text() == "new"
    assert leftovers(path.parent, "b.json") == []


def test_a_writer_that_raises_midway_keeps_the_old_file(tmp_path):
    path = write_text_atomic(tmp_path / "f.csv", "old\n")

    def half_then_fail(handle):
        handle.write(b"half a new fi")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old\n" and leftovers(tmp_path, "f.csv") == []


def test_a_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_json_atomic(tmp_path / "recipe.json", {"v": 1})

    def refuse(src, dst):
        raise PermissionError("read-only")

    monkeypatch.setattr(run_folder.os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_json_atomic(path, {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1} and leftovers(tmp_path, "recipe.json") == []


def test_json_that_cannot_be_serialised_touches_nothing(tmp_path):
    path = write_json_atomic(tmp_path / "done.json", {"ok": True})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": True} and leftovers(tmp_path, "done.json") == []


def test_the_write_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    monkeypatch.setattr(run_folder.os, "fsync", fsync)
    monkeypatch.setattr(run_folder.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    write_text_atomic(tmp_path / "x.txt", "x")
    assert calls == ["fsync file", "replace", "fsync folder"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_permissions_the_umask_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        text = write_text_atomic(tmp_path / "recipe.json", "{}")
        checkpoint = save_checkpoint_file({"w": torch.ones(1)}, tmp_path / run_folder.CHECKPOINT)
    finally:
        os.umask(previous)
    for path in (text, checkpoint):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_the_next_writer_removes_temporaries_a_killed_writer_left(tmp_path):
    from mbmix_fw.training.folder_lock import hold_folder, release_folder

    checkpoints = tmp_path / run_folder.CHECKPOINT.parent
    checkpoints.mkdir()
    leftover = [checkpoints / ".last.pt.k3x_9ab2.tmp", tmp_path / ".metrics.csv.0f1e2d3c.tmp",
                tmp_path / ".recipe.json.abcdefgh.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / ".hidden.tmp", checkpoints / "last.pt", tmp_path / "metrics.csv"]
    for path in leftover + kept:
        path.write_text("x")
    hold_folder(tmp_path)
    try:
        assert not any(path.exists() for path in leftover)
        assert all(path.exists() for path in kept)
    finally:
        release_folder(tmp_path)


def test_a_killed_write_leaves_a_temporary_the_cleanup_recognises(tmp_path, monkeypatch):
    """The names write_atomic gives its temporaries are the names the clean-up removes."""
    def killed(src, dst):
        raise KeyboardInterrupt  # stands for the kill: no clean-up code of ours runs after it

    monkeypatch.setattr(run_folder.Path, "unlink", lambda self, missing_ok=False: None)
    monkeypatch.setattr(run_folder.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(tmp_path / "metrics.csv", "x")
    monkeypatch.undo()
    assert len(list(tmp_path.iterdir())) == 1
    assert run_folder.remove_leftover_temporaries(tmp_path) and not list(tmp_path.iterdir())


def test_a_failed_checkpoint_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / run_folder.CHECKPOINT
    save_checkpoint_file({"iteration": 3, "w": torch.ones(2)}, path)
    with pytest.raises(Exception):
        save_checkpoint_file({"iteration": 4, "f": lambda: None}, path)  # a lambda cannot be pickled
    state = load_checkpoint_file(path)
    assert state["iteration"] == 3 and torch.equal(state["w"], torch.ones(2))
    assert leftovers(path.parent, "last.pt") == []


def test_a_failed_metrics_rewrite_keeps_the_previous_csv(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path, flush_every=1)
    log.append(1, {"a": 1.0})
    before = (tmp_path / run_folder.METRICS_CSV).read_text()

    def refuse(src, dst):
        raise OSError("no space left on device")

    monkeypatch.setattr(run_folder.os, "replace", refuse)
    with pytest.raises(OSError):
        log.append(2, {"a": 2.0, "b": 3.0})  # a new column: the CSV is rewritten whole
    assert (tmp_path / run_folder.METRICS_CSV).read_text() == before
    assert leftovers(tmp_path, run_folder.METRICS_CSV) == [run_folder.TB_DIR]
