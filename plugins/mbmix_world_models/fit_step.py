"""What every world model's fit step does around its loss: the optimiser it steps and the finite check that
decides whether it steps at all. One module so the two models (``sobolev_mlp``, ``particle_gnn``) cannot
drift apart, and because on a CPU this scaffolding was a third of a cloth model's fit step: AdamW's
per-parameter Python loop and one ``isfinite`` pass per tensor cost about as much as the loss's matmuls
(``benchmarks/RESULTS.md``, "The MB-MIX iteration's cost")."""
from __future__ import annotations

from typing import Iterable

import torch


def adamw(parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW on the fused kernel (one call for all parameters, on CPU and CUDA alike) instead of its
    per-parameter loop: the same update up to round-off."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=True)


def all_finite(tensors: Iterable[torch.Tensor | None]) -> torch.Tensor:
    """Whether every entry of every tensor is finite, as one boolean device scalar (no host sync).

    Each tensor is summed in float64 and only the sums are checked: a NaN or an inf anywhere makes its
    sum non-finite (``inf − inf`` is NaN), and no sum of finite float32 values overflows float64, so this
    says exactly what ``isfinite(t).all()`` per tensor says, with one reduction per tensor instead of
    three full-size passes (``isfinite`` is ``abs``, ``ne`` and ``eq``). A float64 tensor whose finite
    entries sum beyond float64's range (about 1e308) reads as non-finite: its step is skipped, which is
    what such a tensor deserves."""
    sums = [t.sum(dtype=torch.float64) for t in tensors if t is not None]
    return torch.isfinite(torch.stack(sums)).all() if sums else torch.tensor(True)
