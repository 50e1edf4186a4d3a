"""Recipe keys that moved (to another table, or renamed by their plugin: ``ComponentConfig.renamed_fields``):
still read, with one warning line naming the file (or the ``--set``) and the key.

Why: a recipe written for an earlier release must keep running as it did. A moved key's value is carried to
where it lives now before the recipe is validated, so the run, its ``recipe.json`` and every check see only
the new key. A file writing both, with different values, is an error naming both (which one would win is not
something to guess); a ``--set`` of the old key is moved the same way, so it overrides the file as it did.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Callable

from ..errors import RecipeError

log = logging.getLogger("mbmix_fw")

MOVED = {
    "scheduler.lr_schedule": "optim.lr_schedule",
    "critic.lam": "critic.td_lambda",
}
"""Old dotted key → new dotted key (``table.field``). The learning-rate schedule is the training loop's,
applied whatever the scheduler, so a third-party scheduler cannot drop it by not redeclaring it; the critic's
λ is ``td_lambda``, so ``lam`` names only the mix estimator's λ (``estimator.lam``, ``Plan.lam``)."""


def key_moves(data: dict[str, Any],
              renamed: Callable[[str, Any], dict[str, str]] = lambda table, kind: {}) -> dict[str, str]:
    """Old dotted key → new for ``data`` (a parsed recipe): :data:`MOVED`, and the fields the plugin of each
    table renamed (``renamed(table, kind)``)."""
    moves = dict(MOVED)
    for table, value in data.items():
        if isinstance(value, dict):
            moves.update({f"{table}.{old}": f"{table}.{new}"
                          for old, new in renamed(table, value.get("kind")).items()})
    return moves


def move_keys(data: dict[str, Any], source: str, *, warn: bool = True,
              renamed: Callable[[str, Any], dict[str, str]] = lambda table, kind: {}) -> dict[str, Any]:
    """``data`` (a parsed recipe) with every :data:`MOVED` key, and every field a plugin renamed
    (``renamed(table, kind)``: its config's ``renamed_fields``), carried to its new place: a copy when one
    moved (``data`` itself otherwise). ``warn``: log one line per moved key, ``"{source}: old: …"``."""
    moved = data
    for old, new in key_moves(data, renamed).items():
        (old_table, old_key), (new_table, new_key) = old.split("."), new.split(".")
        table = moved.get(old_table)
        if not isinstance(table, dict) or old_key not in table:
            continue
        if moved is data:
            moved = copy.deepcopy(data)
        value = moved[old_table].pop(old_key)
        target = moved.setdefault(new_table, {})
        if not isinstance(target, dict):  # not a table: the envelope's validation says so
            continue
        if new_key in target and target[new_key] != value:
            raise RecipeError([f"{source}: {old}: moved to {new}, which this recipe also sets, to another value "
                               f"({target[new_key]!r}, here {value!r}); keep only {new}"])
        target[new_key] = value
        if warn:
            log.warning("%s: %s: deprecated, read as %s; move it to [%s]", source, old, new, new_table)
    return moved
