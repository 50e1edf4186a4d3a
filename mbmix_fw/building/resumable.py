"""What ``recipe.json`` may change between a run's start and its resume, and the refusal of everything else.

Why: a checkpoint holds state built for the recipe the run started with — the states of ``env.num_envs``
envs, a replay buffer of ``world_model.buffer_capacity`` rows, networks and optimisers of given sizes and
settings, a scheduler's adaptive state, RNG streams seeded from ``run.seed``. Resumed under a recipe edited
in any of those, the run went on as something its ``recipe.json`` does not describe (``env.num_envs``
8 → 32 resumed with 8 envs and exit 0). So :func:`~mbmix_fw.building.runs.start_run`
keeps a copy of the recipe the run starts with (:data:`STARTED_RECIPE`, never rewritten by a resume), and
:func:`refuse_unresumable` compares ``recipe.json`` with it before anything is built: a field outside
:data:`RESUMABLE` that differs is a one-line refusal naming it (exit 2, nothing written).

A run folder written before the copy existed has none; there the checkpoint's own checks
(:mod:`mbmix_fw.training.checkpoint`: network shapes, env count, buffer capacity, Adam's betas) still refuse
what its tensors cannot hold.

Torch-free, like the CLI's other folder checks.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import PROG, UserError
from ..training.run_folder import STARTED_RECIPE
from .moved_keys import move_keys

RESUMABLE = {
    "run.iterations": "the number of updates: raise it to train a run longer",
    "run.env_steps": "the env-step budget: raise it to train a run longer",
    "run.eval_every": "evaluation cadence (iterations)",
    "run.eval_every_env_steps": "evaluation cadence (env steps)",
    "run.checkpoint_every": "checkpoint cadence",
    "run.max_skipped_iterations": "when a run whose updates are all skipped stops",
    "run.device": "a checkpoint still resumes only on the device type that wrote it",
    "run.out": "the run folder is the one being resumed, wherever run.out points",
}
"""The only ``recipe.json`` fields a resume honours when they changed since the run started (how long it
trains, when it evaluates and checkpoints), each with why it may change. Every other field is fixed by the
checkpoint: the env and its count, the estimator, scheduler and world model with every setting (buffer
capacity, network sizes), the policy and critic nets, the optimiser settings (``optim.*``: Adam's betas,
learning rates), ``run.seed``, ``run.dtype``, ``run.eval_envs``."""


def resumable_fields() -> str:
    """``run.iterations, run.env_steps, …``: for messages."""
    return ", ".join(RESUMABLE)


def refuse_unresumable(recipe: dict[str, Any], run_dir: Path, recipe_source: str) -> None:
    """Raise one line naming ``recipe_source`` and the first field outside :data:`RESUMABLE` in which
    ``recipe`` (the validated ``recipe.json``, ``model_dump(mode="json")``) differs from the recipe the run
    in ``run_dir`` started with. A folder without that copy (written before it existed) passes.

    Fields only one side has inside a table both have (a plugin upgrade added a field with its default)
    are not compared; a table only one side has (a world model added or removed) is a difference."""
    started_path = run_dir / STARTED_RECIPE
    if not started_path.is_file():
        return
    try:
        started = json.loads(started_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{started_path}: unreadable ({exc}); it is the recipe {run_dir} started with, which "
                        f"resume compares recipe.json against") from None
    if not isinstance(started, dict):
        raise UserError(f"{started_path}: not a recipe (a JSON object); it is the recipe {run_dir} started with")
    started = move_keys(started, str(started_path), warn=False)  # as recipe.json was read: keys where they live now
    for field, was, now in _differences(started, recipe):
        if field in RESUMABLE:
            continue
        raise UserError(
            f"{recipe_source}: {field} is {_shown(now)} but the run started with {_shown(was)}; its checkpoint "
            f"cannot honour that: restore it, or start a new run with '{PROG} run' (a resume honours changes "
            f"to {resumable_fields()} only)")


def _differences(started: dict[str, Any], now: dict[str, Any], prefix: str = ""):
    """``(dotted field, started value, current value)`` for each difference, ``kind`` first in a table."""
    for key in sorted(started.keys() | now.keys(), key=lambda k: (k != "kind", list(started).index(k)
                                                                  if k in started else len(started))):
        field = f"{prefix}{key}"
        if key not in now or key not in started:
            if not prefix:  # a whole table added or removed
                yield field, started.get(key, _ABSENT), now.get(key, _ABSENT)
            continue
        was, value = started[key], now[key]
        if isinstance(was, dict) and isinstance(value, dict):
            yield from _differences(was, value, f"{field}.")
        elif was != value:
            yield field, was, value


_ABSENT = object()


def _shown(value: Any) -> str:
    return "absent" if value is _ABSENT else json.dumps(value)


__all__ = ["RESUMABLE", "refuse_unresumable", "resumable_fields"]
