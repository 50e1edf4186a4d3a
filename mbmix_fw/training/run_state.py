"""The parts of a run's checkpoint that belong to no single role: the random streams, the optional state
of the env, estimator and scheduler, and the check that nothing saved is NaN/inf.

Why: a resumed run continues bit for bit only if every random stream it draws from (the run's own
generator, torch's, CUDA's, numpy's and python's global ones) is restored exactly where it stopped.
"""
from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from ..contracts.component import component_label
from ..errors import UserError
from ..maths.finite import all_finite, floating_tensors


def nonfinite_entries(obj: Any) -> bool:
    """Whether any floating tensor inside ``obj`` (a state dict, possibly nested) is NaN/inf."""
    return not bool(all_finite(floating_tensors(obj)))


def component_state(component: Any, slot: str | None = None) -> Any:
    """The optional ``state_dict()`` of an env, estimator or scheduler (``None`` if it has none).

    With ``slot`` (the component's recipe table, which names it in the message) the state is checked
    for values a checkpoint cannot hold (:func:`not_plain`): a one-line :class:`UserError` naming the
    component and the key, when the checkpoint is written. Refused rather than converted: a numpy
    ``float32`` turned into a Python float would compute in float64 after a resume, and the resumed run
    would drift from the uninterrupted one without a word.

    Protocol (optional, duck-typed): a stateful env (its own RNG), estimator or scheduler (an adaptive
    schedule) defines ``state_dict() -> dict`` of tensors and plain Python values
    (``torch.load(weights_only=True)`` must read it) and ``load_state_dict(state)``; the trainer saves it
    in every checkpoint and restores it on resume. World models (``nn.Module`` objects) are saved whole
    (``WorldModel`` docs).
    """
    getter = getattr(component, "state_dict", None)
    if not callable(getter):
        return None
    state = getter()
    if slot is not None:
        where = not_plain(state)
        if where is not None:
            path, value = where
            kind = f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")
            raise UserError(f"{component_label(slot, component)}: state_dict(){path} is a {kind}; a checkpoint "
                            f"holds only tensors and plain Python values (int, float, bool, str, None, lists, "
                            f"tuples and dicts of them), read back with torch.load(weights_only=True): convert "
                            f"it (float(x), int(x), torch.as_tensor(x))")
    return state


PLAIN_TYPES = (int, float, bool, str, bytes, complex, type(None), torch.Size, torch.dtype, torch.device)
"""Leaves ``torch.load(weights_only=True)`` reads back, by exact type: a numpy scalar subclasses
``float`` but is refused on load (the whole checkpoint then reads as unreadable)."""
PLAIN_CONTAINERS = (list, tuple, dict, OrderedDict, set)


def not_plain(obj: Any, path: str = "") -> tuple[str, Any] | None:
    """The first entry of ``obj`` that a ``weights_only`` load would refuse, as ``("['key'][0]", value)``,
    or ``None``. Checked when the checkpoint is written, so the error names the key and the component
    instead of a resume failing later on an unreadable file."""
    if isinstance(obj, torch.Tensor) or type(obj) in PLAIN_TYPES:
        return None
    if type(obj) not in PLAIN_CONTAINERS:
        return path, obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            found = not_plain(key, f"{path}[{key!r}] (the key)") or not_plain(value, f"{path}[{key!r}]")
            if found is not None:
                return found
        return None
    for i, value in enumerate(obj):
        found = not_plain(value, f"{path}[{i}]")
        if found is not None:
            return found
    return None


def load_component_state(component: Any, saved: Any) -> None:
    """Restore what :func:`component_state` saved (nothing when either side has no state)."""
    loader = getattr(component, "load_state_dict", None)
    if saved is not None and callable(loader):
        loader(saved)


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Every random stream a run draws from, as tensors and plain values (``weights_only`` loads it)."""
    np_state = np.random.get_state()
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def restore_rng(rng: dict[str, Any], generator: torch.Generator) -> None:
    """Put every stream back where :func:`rng_state` found it."""
    generator.set_state(rng["generator"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))


def check_device(saved: str, device: torch.device) -> None:
    """Generator states are device-specific: a run continues bit for bit only where it started."""
    if saved != device.type:
        raise UserError(f"checkpoint was written by a run on {saved}; resume it with --device {saved}")
