"""The run folder: its layout (every file name a run, a data-parallel run or a sweep trial writes) and the
one way files are written into it, atomically.

Why atomic: a run is killed at any moment (Ctrl-C, a pre-empted node, a full disk) and resumed later, and
``resume``, ``report`` and a rerun ``sweep`` read what it left. A file is therefore never written in place:
the new content goes to a temporary file in the same folder (same file system, so the rename is atomic),
is flushed and fsynced, then :func:`os.replace` swaps it in, and the folder is fsynced so the rename itself
survives a power loss. A write that fails at any point leaves the previous file, byte for byte, and no
temporary file behind; a writer killed mid-write leaves its temporary file, which the next writer of the
folder removes (:func:`remove_leftover_temporaries`, called once it holds the folder's lock). Files are
created with the permissions the umask gives (0644 under umask 022), like any file the user writes.

Layout of a run folder (``run.out``, or ``--out``)::

    recipe.json           the resolved recipe, defaults included (``resume`` rebuilds the run from it)
    plugins.json          every loaded plugin: distribution, version, kinds, the tables it provided
    environment.json      per process that trained it (run, each resume): torch threads, versions, machine
    metrics.csv           one row per iteration (appended; rewritten atomically when a column appears)
    tb/                   TensorBoard events
    checkpoints/last.pt   the full training state (``torch.save``, read with ``weights_only=True``)
    checkpoints/recipe_at_start.json  the recipe the run started with: ``resume`` refuses a recipe.json
                          edited in a field the checkpoint cannot honour (``building/resumable.py``)
    data_parallel.json    ``{"world_size": K}``: written only by a data-parallel (torchrun) run
    done.json             a finished sweep trial's final metrics (written by ``distributed/trial.py``)
    error.txt             a failed sweep trial's traceback
    .writer.lock          who writes the folder now (``training/folder_lock.py``: one writer at a time)

Torch-free: the sweep driver and the CLI import it without loading torch.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import IO, Any, Callable

RECIPE_JSON = "recipe.json"
PLUGINS_JSON = "plugins.json"
ENVIRONMENT_JSON = "environment.json"
METRICS_CSV = "metrics.csv"
TB_DIR = "tb"
CHECKPOINT = Path("checkpoints") / "last.pt"
"""Relative to the run folder."""
STARTED_RECIPE = Path("checkpoints") / "recipe_at_start.json"
"""Relative to the run folder; written once, when the run starts, and never by a resume."""
DATA_PARALLEL_JSON = "data_parallel.json"
DONE_JSON = "done.json"
ERROR_TXT = "error.txt"
TRAINING_OUTPUTS = (METRICS_CSV, TB_DIR)
"""What training writes before its first checkpoint: a fresh start removes these leftovers of a killed run."""
WRITER_LOCK = ".writer.lock"
"""The lock file of the folder's one writer; not part of a run's results."""
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
"""A temporary file of :func:`write_atomic` (``.last.pt.1f3a9c2e.tmp``; ``tempfile``'s names match too)."""


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path``, fsync it, then ``os.replace`` it onto
    ``path`` (creating the folder). If anything raises, ``path`` keeps its previous content and the
    temporary file is removed; the exception propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def remove_leftover_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files a killed :func:`write_atomic` left in a run folder (and its
    ``checkpoints/``); returns them. Only for the folder's writer: another one's may be mid-write."""
    removed = []
    for where in (Path(folder), Path(folder) / CHECKPOINT.parent):
        for leftover in where.glob(".*.tmp") if where.is_dir() else ():
            if _TEMPORARY.fullmatch(leftover.name) and leftover.is_file():
                leftover.unlink(missing_ok=True)
                removed.append(leftover)
    return removed


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new file ``.NAME.XXXXXXXX.tmp`` beside ``path``, opened for writing. Created with mode 0666 so the
    kernel applies the umask (``tempfile.mkstemp`` makes every file 0600, unreadable to the group)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable: without it a power loss can bring back the old file, or none."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder; the file itself is already on disk
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """:func:`write_atomic` of ``text`` as UTF-8 (CSV files: build the text with ``csv`` first)."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda handle: handle.write(data))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """:func:`write_atomic` of ``data`` as indented JSON plus a newline. ``data`` is serialised before the
    temporary file is created, so a value JSON cannot hold fails without touching the folder."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def remove_training_outputs(out_dir: Path) -> None:
    """Remove :data:`TRAINING_OUTPUTS` from ``out_dir``: what a run killed before its first checkpoint
    left, before the run starts again there (its TensorBoard events would otherwise repeat its steps)."""
    for name in TRAINING_OUTPUTS:
        path = Path(out_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


__all__ = ["CHECKPOINT", "DATA_PARALLEL_JSON", "DONE_JSON", "ENVIRONMENT_JSON", "ERROR_TXT", "METRICS_CSV",
           "PLUGINS_JSON", "RECIPE_JSON", "STARTED_RECIPE", "TB_DIR", "TRAINING_OUTPUTS", "WRITER_LOCK",
           "remove_leftover_temporaries", "remove_training_outputs", "write_atomic", "write_json_atomic", "write_text_atomic"]
