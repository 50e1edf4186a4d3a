"""Decisions and counts every data-parallel rank must share.

Data-parallel training (:mod:`mbmix_fw.distributed.ddp`) keeps one replica per rank and averages gradients
in collectives. A decision taken from a rank's own numbers — "this loss is NaN, skip the step", "this batch
is empty" — can differ between ranks: one rank steps while another skips and the replicas drift apart
silently, or one rank leaves a collective that the others then wait in forever. :func:`any_rank` makes such a
flag the same everywhere with one all-reduce; outside a process group it returns the flag unchanged.
"""
from __future__ import annotations

import torch


def any_rank(flag: torch.Tensor) -> torch.Tensor:
    """``flag`` (a bool tensor) OR-ed over every rank of the default process group, as a bool tensor of the
    same shape; ``flag`` itself in a single process. Every rank must call it at the same point (it is a
    collective). No host read: on CUDA the all-reduce is queued on the stream like the gradients'."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    agreed = flag.to(torch.float32)  # a copy: MAX over {0, 1} is OR, on every backend
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    return agreed > 0


def _group_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank_count() -> int:
    """Processes in the default process group (1 outside one)."""
    return _group_size()


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over every rank (a copy; ``value`` itself in a single process). A collective: every
    rank calls it at the same point. Used where a count must be the union's, not a rank's: the healthy envs
    an actor loss is normalised by, the action-gradient rows an actor step kept."""
    import torch.distributed as dist

    if _group_size() == 1:
        return value
    total = value.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total
