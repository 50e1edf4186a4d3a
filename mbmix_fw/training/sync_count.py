"""Count the host reads of tensor values that would block on a GPU ("synchronisations"), on any device.

On CUDA, ``torch.cuda.set_sync_debug_mode("warn")`` reports synchronising calls; on a CPU-only machine
nothing blocks, so that tool is silent. :func:`count_host_reads` counts instead the Python-level calls
that *would* synchronise on a GPU: reading a value (``item``, ``bool``, ``float``, ``int``, ``tolist``,
``numpy``, ``cpu``), data-dependent shapes (``nonzero``, boolean-mask indexing, ``masked_select``) and
``torch.equal``. It counts what mbmix-fw's own code and the Python parts of torch call; reads inside
C++ kernels are not seen (none of torch's eager kernels used by the trainer reads the device).

Used by ``tests/core/training/test_sync_count.py`` (the count per iteration stays bounded) and
``benchmarks/gpu_loop.py``.
"""
from __future__ import annotations

import collections
import contextlib
import traceback
from typing import Iterator

import torch

_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "nonzero",
            "masked_select")
_FUNCTIONS = ("equal", "nonzero", "masked_select")


class HostReads:
    """Counts by call name, and (``where=True``) by the first caller outside torch."""

    def __init__(self, where: bool = False):
        self.by_name: collections.Counter[str] = collections.Counter()
        self.by_site: collections.Counter[str] = collections.Counter()
        self.where = where

    @property
    def total(self) -> int:
        return sum(self.by_name.values())

    def _record(self, name: str) -> None:
        self.by_name[name] += 1
        if self.where:
            for frame in reversed(traceback.extract_stack()[:-2]):
                if "/torch/" not in frame.filename and "sync_count" not in frame.filename:
                    self.by_site[f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} {name}"] += 1
                    break


@contextlib.contextmanager
def count_host_reads(where: bool = False) -> Iterator[HostReads]:
    """Within the block, count calls that read tensor values on the host (see the module docstring)."""
    reads = HostReads(where)
    saved: list[tuple[object, str, object]] = []

    def wrap(owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            reads._record(label)
            return original(*args, **kwargs)

        saved.append((owner, name, original))
        setattr(owner, name, counted)

    for name in _METHODS:
        wrap(torch.Tensor, name, name)
    for name in _FUNCTIONS:
        wrap(torch, name, f"torch.{name}")
    original_getitem = torch.Tensor.__getitem__

    def getitem(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
            reads._record("bool-mask index")
        return original_getitem(self, index)

    saved.append((torch.Tensor, "__getitem__", original_getitem))
    torch.Tensor.__getitem__ = getitem
    try:
        yield reads
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)
