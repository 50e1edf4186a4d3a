"""Atomic checkpoint files: a crash mid-write never leaves a truncated or half-new checkpoint."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .run_folder import write_atomic


def save_checkpoint_file(state: dict[str, Any], path: Path) -> Path:
    """``torch.save`` through :func:`~mbmix_fw.training.run_folder.write_atomic`: a failed save keeps the
    previous checkpoint. A write that fails raises its own ``OSError`` (a full disk stays a full disk),
    not the ``RuntimeError`` ("unexpected pos …") torch's zip writer turns it into."""
    def save(handle) -> None:
        recording = _RecordingWriter(handle)
        try:
            torch.save(state, recording)
        except RuntimeError:
            if recording.error is not None:
                raise recording.error from None
            raise

    return write_atomic(path, save)


class _RecordingWriter:
    """A binary file handle that remembers the ``OSError`` of its last failed write."""

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def load_checkpoint_file(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``: tensors and plain Python values only, never arbitrary pickles.

    The archive's checksums are verified first: ``torch.save`` writes a zip archive with a CRC-32 per
    member but ``torch.load`` never checks them, so a flipped bit in the weights (a bad disk, an incomplete
    copy) would load as slightly different weights. A damaged archive is a :class:`UserError`. The file is
    opened once, so the check and the load read the same file even if a writer replaces it meanwhile."""
    with open(path, "rb") as handle:
        _verify_checksums(handle)
        handle.seek(0)
        return torch.load(handle, map_location=map_location, weights_only=True)


def _verify_checksums(handle: Any) -> None:
    """Raise when a member of the zip archive in ``handle`` does not match its CRC-32. A file that is not
    a whole zip archive is left to ``torch.load``, whose error says what it is instead. The message names
    no file: :func:`read_checkpoint`, which every command loads through, puts the path in front."""
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError):
        return
    with archive:
        try:
            damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            damaged = f"the archive ({exc})"
    if damaged is not None:
        raise UserError(f"damaged: {damaged} does not match its checksum (a bad disk or an incomplete copy); "
                        f"restore the file from a copy, or train the run again")


REQUIRED_KEYS = ("format", "iteration", "policy", "critic", "target_critic", "actor_opt", "critic_opt", "rng")
"""Entries every checkpoint written by :meth:`Trainer.save_checkpoint <mbmix_fw.training.trainer.Trainer.state_dict>` has."""
SHAPED_ENTRIES = ("policy", "critic", "target_critic", "obs_norm", "world_model")
"""Entries whose tensor shapes follow from the recipe (network sizes, env dimensions)."""
EXTRA_STATE = "_extra_state"
"""The key ``nn.Module.state_dict`` stores ``get_extra_state()`` under (torch's ``_EXTRA_STATE_KEY_SUFFIX``)."""


def read_checkpoint(path: Path) -> dict[str, Any]:
    """:func:`load_checkpoint_file`, with every way a file can fail to be a checkpoint turned into one
    line naming it (empty, truncated, random bytes, a pickle with code in it, a dict of something else)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UserError(f"{path}: cannot read the checkpoint: {exc.strerror or exc}") from None
    if size == 0:
        raise UserError(f"{path}: the checkpoint is empty (0 bytes)")
    try:
        state = load_checkpoint_file(path)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever torch.load fails with, the file is the cause
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "weights only load failed" in reason.lower():  # torch's advice to disable the check is not ours
            reason = "it holds something other than tensors and plain values (random bytes, or a pickle " \
                     "that would run code), so it was not unpickled"
        raise UserError(f"{path}: not a readable checkpoint (truncated or corrupt?): {reason[:200]}") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not an mbmix-fw checkpoint: holds a {type(state).__name__}, not a dict")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise UserError(f"{path}: not an mbmix-fw checkpoint: no {', '.join(missing)} entries")
    for entry in SHAPED_ENTRIES:
        for name, tensor in _tensors(state.get(entry), entry).items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise UserError(f"{path}: {name} holds nan or inf; the checkpoint is damaged and cannot be resumed")
    return state


def check_shapes(state: dict[str, Any], expected: dict[str, Any], path: Path, recipe_source: str) -> None:
    """Raise one line naming ``path`` and the first tensor whose name or shape differs between the
    checkpoint ``state`` and a freshly built trainer's ``expected`` state (its recipe edited since).

    Only parameters and buffers are compared, never a module's ``_extra_state`` (:data:`EXTRA_STATE`):
    what a module keeps there is its own to restore (``set_extra_state``) and need not exist in a module
    that was just built — a world model's optimiser moments appear with its first fit, so comparing
    them refused every MB-MIX run resumed after the model had been fitted. Their shapes follow from the
    parameters, which are compared."""
    for entry in SHAPED_ENTRIES:
        theirs, ours = _shaped(state.get(entry), entry), _shaped(expected.get(entry), entry)
        for name in sorted(theirs.keys() | ours.keys()):
            where = f"{path}: does not match {recipe_source}: "
            if name not in ours:
                raise UserError(where + f"{name} is in the checkpoint but not in the networks the recipe builds "
                                        f"(were hidden sizes or the world model edited?)")
            if name not in theirs:
                raise UserError(where + f"{name} is missing from the checkpoint (were hidden sizes or the "
                                        f"world model edited?)")
            if theirs[name] != ours[name]:
                raise UserError(where + f"{name} has shape {theirs[name]} in the checkpoint but the recipe "
                                        f"builds {ours[name]} (were hidden sizes or env dimensions edited?)")


def check_settings(state: dict[str, Any], expected: dict[str, Any], path: Path, recipe_source: str) -> None:
    """Raise one line naming ``path`` and the recipe field when the checkpoint ``state`` was trained with a
    setting the freshly built trainer's ``expected`` state differs in, outside the networks' shapes: the
    env count (the saved env states), the replay buffer's capacity, Adam's betas (``Adam.load_state_dict``
    would silently bring back the old ones).

    Why here as well as in :mod:`mbmix_fw.building.resumable`: a run folder written before that module kept
    the recipe a run started with has only its checkpoint to compare with."""
    where = f"{path}: does not match {recipe_source}: "
    theirs, ours = state.get("cursor_state"), expected.get("cursor_state")
    if isinstance(theirs, torch.Tensor) and isinstance(ours, torch.Tensor) and theirs.shape[0] != ours.shape[0]:
        raise UserError(where + f"env.num_envs gives {ours.shape[0]} envs but the checkpoint holds the states of "
                                f"{theirs.shape[0]}; a checkpoint cannot honour a changed env count (restore "
                                f"env.num_envs, or start a new run)")
    theirs, ours = state.get("buffer"), expected.get("buffer")
    if isinstance(theirs, dict) and isinstance(ours, dict) and theirs.get("capacity") != ours.get("capacity"):
        raise UserError(where + f"world_model.buffer_capacity is {ours.get('capacity')} but the checkpoint's "
                                f"replay buffer holds {theirs.get('capacity')}; a checkpoint cannot honour a "
                                f"changed capacity (restore it, or start a new run)")
    for entry in ("actor_opt", "critic_opt"):
        theirs, ours = _betas(state.get(entry)), _betas(expected.get(entry))
        if theirs is not None and ours is not None and theirs != ours:
            raise UserError(where + f"optim.betas is {list(ours)} but the checkpoint's {entry} was trained with "
                                    f"{list(theirs)}; a checkpoint cannot honour changed optimiser settings "
                                    f"(restore optim.betas, or start a new run)")


def _betas(optimiser_state: Any) -> tuple[float, ...] | None:
    """The first parameter group's Adam betas in an optimiser's ``state_dict`` (None if it has none)."""
    try:
        return tuple(float(b) for b in optimiser_state["param_groups"][0]["betas"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def restore_checkpoint(trainer: Any, state: dict[str, Any], path: Path, recipe_source: str) -> None:
    """Load ``state`` (:func:`read_checkpoint` of ``path``) into ``trainer``, built from ``recipe_source``;
    one line naming the file if the two do not fit together."""
    expected = trainer.state_dict()
    check_shapes(state, expected, path, recipe_source)
    check_settings(state, expected, path, recipe_source)
    try:
        trainer.load_state_dict(state)
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: cannot restore the checkpoint: {type(exc).__name__}: {reason[:200]}") from None


def _shaped(value: Any, prefix: str) -> dict[str, list[int]]:
    """:func:`_tensor_shapes` without anything inside a module's ``_extra_state``."""
    return {name: shape for name, shape in _tensor_shapes(value, prefix).items()
            if EXTRA_STATE not in name.split(".")}


def _tensor_shapes(value: Any, prefix: str) -> dict[str, list[int]]:
    """``{"policy.net.0.weight": [64, 3], …}`` for every tensor in a nested dict/list."""
    return {name: list(tensor.shape) for name, tensor in _tensors(value, prefix).items()}


def _tensors(value: Any, prefix: str) -> dict[str, torch.Tensor]:
    """``{"policy.net.0.weight": tensor, …}``: every tensor in a nested dict/list, by dotted name."""
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _tensors(item, f"{prefix}.{key}").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in _tensors(item, f"{prefix}.{i}").items()}
    return {}
