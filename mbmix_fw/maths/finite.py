"""Finite checks and snapshots cheap enough to run every step: the guards of a fit step or of a world model's
iteration (is this batch, gradient or state finite; keep a copy to restore) ran as often as the work they
guarded and, written the obvious way, cost about a fifth of a cloth world model's update per iteration on a CPU
(``benchmarks/RESULTS.md``, "The MB-MIX iteration's cost")."""
from __future__ import annotations

from typing import Any, Iterable

import torch


def all_finite(tensors: Iterable[torch.Tensor | None]) -> torch.Tensor:
    """Whether every entry of every tensor is finite, as one boolean device scalar (no host sync).

    Each tensor is summed in float64 and only the sums are checked: a NaN or an inf anywhere makes its
    sum non-finite (``inf − inf`` is NaN), and no sum of finite float32 values overflows float64, so this
    says what ``isfinite(t).all()`` per tensor says, with one reduction per tensor instead of three
    full-size passes (``isfinite`` is ``abs``, ``ne`` and ``eq``). A float64 tensor whose finite entries
    sum beyond float64's range (about 1e308) reads as non-finite; whatever it guards is skipped or restored,
    which such a tensor deserves. ``None`` entries are ignored; no tensor at all is finite."""
    sums = [t.sum(dtype=torch.float64) for t in tensors if t is not None]
    return torch.isfinite(torch.stack(sums)).all() if sums else torch.tensor(True)


def floating_tensors(obj: Any) -> list[torch.Tensor]:
    """The floating-point tensors inside ``obj`` (a state dict, possibly nested in dicts, lists, tuples)."""
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in floating_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in floating_tensors(v)]
    return []


def cloned(obj: Any) -> Any:
    """A copy of ``obj`` (a state dict, possibly nested) that shares no tensor storage with it: tensors are
    cloned, dicts, lists and tuples rebuilt, anything else (numbers, strings) kept. What ``copy.deepcopy``
    gives a state dict (its ``_metadata`` included), at half its cost: no memo, no pickling protocol per
    object."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        copy = type(obj)((k, cloned(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a module's state dict: the versions load_state_dict reads
            copy._metadata = cloned(obj._metadata)
        return copy
    if isinstance(obj, (list, tuple)):
        return type(obj)(cloned(v) for v in obj)
    return obj
