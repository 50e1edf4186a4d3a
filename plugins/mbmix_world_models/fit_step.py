"""The optimiser every world model's fit step runs. One module so the two models (``sobolev_mlp``,
``particle_gnn``) cannot drift apart, and because on a CPU the fit step's scaffolding was a third of a cloth
model's fit: AdamW's per-parameter Python loop and an ``isfinite`` pass per tensor (now
:func:`mbmix_fw.all_finite`) cost about as much as the loss's matmuls (``benchmarks/RESULTS.md``, "The MB-MIX
iteration's cost")."""
from __future__ import annotations

from typing import Iterable

import torch


def adamw(parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW on the fused kernel (one call for all parameters, on CPU and CUDA alike) instead of its
    per-parameter loop: the same update up to round-off."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=True)
