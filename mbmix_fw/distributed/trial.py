"""One sweep trial: an ordinary run folder, started fresh, resumed from its checkpoint, or skipped when done.

:func:`run_trial` is a plain function (Ray runs it as a task; tests may call it directly). A trial is
*finished* when its folder holds ``done.json``, written atomically after ``Trainer.train()`` returns; a
folder with ``checkpoints/last.pt`` but no ``done.json`` is resumed with the same machinery as
``mbmix-fw resume``; anything else starts afresh (stale ``metrics.csv`` and TensorBoard files of a run
killed before its first checkpoint are removed first). The trial holds its folder's writer lock from
before that clean-up until ``done.json`` is written, so a second sweep on the same folder is refused
instead of deleting files under a running trial.
"""
from __future__ import annotations

import json
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

from ..training.folder_lock import hold_folder, release_folder
from ..training.run_folder import CHECKPOINT, DONE_JSON, ERROR_TXT, RECIPE_JSON, TRAINING_OUTPUTS, write_json_atomic


def trial_state(out_dir: Path) -> str:
    """``"finished"``, ``"partial"`` (a checkpoint to resume from) or ``"new"``."""
    if (out_dir / DONE_JSON).is_file():
        return "finished"
    if (out_dir / CHECKPOINT).is_file():
        return "partial"
    return "new"


def read_done(out_dir: Path) -> dict[str, float]:
    """The final metrics a finished trial recorded."""
    return json.loads((out_dir / DONE_JSON).read_text(encoding="utf-8"))["final"]


def run_trial(recipe_data: dict[str, Any], out_dir: str, threads: int = 1) -> dict[str, Any]:
    """Train one trial to the end; never raises: failures come back as ``{"status": "failed", "error": …}``.

    ``recipe_data`` is the trial's resolved recipe (``Recipe.model_dump(mode="json")``), validated again
    here against the plugins installed where the task runs.
    """
    import torch

    from ..building.recipe import validate_recipe
    from ..building.registry import load_registry
    from ..building.runs import SavedRun, resume_run, start_run

    out = Path(out_dir)
    started = time.perf_counter()
    torch.set_num_threads(max(1, int(threads)))
    state = trial_state(out)
    held = False
    try:
        if state == "finished":
            return {"status": "finished", "final": read_done(out), "resumed": False, "seconds": 0.0}
        hold_folder(out)  # before the stale files go: another sweep may be training this trial now
        held = True
        registry = load_registry()
        source = str(out / RECIPE_JSON)
        recipe = validate_recipe(recipe_data, registry, source)
        if state == "partial":
            run = resume_run(SavedRun(out, recipe, source), registry, progress=False)
        else:
            for stale in TRAINING_OUTPUTS:
                path = out / stale
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            run = start_run(recipe, out, registry, progress=False)
        final = run.train()
        write_json_atomic(out / DONE_JSON, {"final": final, "iterations": recipe.run.iterations})
        (out / ERROR_TXT).unlink(missing_ok=True)
        return {"status": "finished", "final": final, "resumed": state == "partial",
                "seconds": time.perf_counter() - started}
    except Exception as exc:  # noqa: BLE001 - one trial's failure must not stop the sweep
        first = (str(exc).splitlines() or [""])[0]
        error = f"{type(exc).__name__}: {first}"
        try:
            if held:  # a trial refused the folder writes nothing into it: another process writes it
                (out / ERROR_TXT).write_text(traceback.format_exc(), encoding="utf-8")
        except OSError:
            pass
        return {"status": "failed", "error": error, "resumed": state == "partial",
                "seconds": time.perf_counter() - started}
    finally:
        if held:
            release_folder(out)
