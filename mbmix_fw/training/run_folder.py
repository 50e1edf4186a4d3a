"""The run folder: its layout (every file name a run, a data-parallel run or a sweep trial writes) and the
one way files are written into it, atomically.

Why atomic: a run is killed at any moment (Ctrl-C, a pre-empted node, a full disk) and resumed later, and
``resume``, ``report`` and a rerun ``sweep`` read what it left. A file is therefore never written in place:
the new content goes to a temporary file in the same folder (same file system, so the rename is atomic),
is flushed and fsynced, then :func:`os.replace` swaps it in. A write that fails at any point leaves the
previous file, byte for byte, and no temporary file behind.

Layout of a run folder (``run.out``, or ``--out``)::

    recipe.json           the resolved recipe, defaults included (``resume`` rebuilds the run from it)
    plugins.json          every loaded plugin: distribution, version, kinds, the tables it provided
    metrics.csv           one row per iteration (appended; rewritten atomically when a column appears)
    tb/                   TensorBoard events
    checkpoints/last.pt   the full training state (``torch.save``, read with ``weights_only=True``)
    checkpoints/recipe_at_start.json  the recipe the run started with: ``resume`` refuses a recipe.json
                          edited in a field the checkpoint cannot honour (``building/resumable.py``)
    data_parallel.json    ``{"world_size": K}``: written only by a data-parallel (torchrun) run
    done.json             a finished sweep trial's final metrics (written by ``distributed/trial.py``)
    error.txt             a failed sweep trial's traceback

Torch-free: the sweep driver and the CLI import it without loading torch.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

RECIPE_JSON = "recipe.json"
PLUGINS_JSON = "plugins.json"
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


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path``, fsync it, then ``os.replace`` it onto
    ``path`` (creating the folder). If anything raises, ``path`` keeps its previous content and the
    temporary file is removed; the exception propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


__all__ = ["CHECKPOINT", "DATA_PARALLEL_JSON", "DONE_JSON", "ERROR_TXT", "METRICS_CSV", "PLUGINS_JSON",
           "RECIPE_JSON", "STARTED_RECIPE", "TB_DIR", "TRAINING_OUTPUTS", "remove_training_outputs", "write_atomic",
           "write_json_atomic", "write_text_atomic"]
