"""Split-half gradient agreement: how much the policy gradients of two disjoint halves of the env batch
agree (cosine), measured inside the one backward pass the policy update already takes.

Why: a window's policy gradient is a mean over envs of per-env gradients. When the two halves' means
point the same way, the batch gradient is mostly signal; when their cosine falls towards 0 it is mostly
noise (long windows through chaotic or stiff dynamics). The ``agree`` scheduler lengthens the window
while the halves agree and shortens it when they decorrelate.

How, without a second backward: the real window's policy runs with its parameters duplicated, one copy
``θ_A`` for the first ``⌊N/2⌋`` rows of the batch and one ``θ_B`` for the rest (``torch.func.functional_call``
on each half of the observations; both copies equal θ and are differentiable clones of it). One backward
of the unchanged loss then fills ``θ_A.grad = g_A``, ``θ_B.grad = g_B`` and ``θ.grad = g_A + g_B`` -- exactly
the gradient of the unsplit loss, because every term of the loss reaches θ through exactly one row's
action. The costs are two half-batch policy forwards per step instead of one full-batch forward, and one
copy of the policy's parameters (``benchmarks/agreement_cost.py`` measures the ratio to plain SHAC).

The halves draw the policy noise in two calls, so a run that measures agreement follows a different (but
identically distributed) random stream than one that does not.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.func import functional_call


class HalfSplitPolicy:
    """``policy_fn(obs [rows, O], generator) -> action [rows, A]`` with per-half parameter copies.

    ``normalize`` maps raw observations to what ``policy`` sees. Built once per window (the copies are
    taken from the current parameters); :meth:`cosine` is valid after the backward of a loss through it.
    """

    def __init__(self, policy: torch.nn.Module, normalize: Callable[[torch.Tensor], torch.Tensor], rows: int):
        if rows < 2:
            raise ValueError(f"split-half agreement needs at least 2 envs, got {rows}")
        self.policy, self.normalize, self.rows, self.cut = policy, normalize, rows, rows // 2
        self.halves = []
        for _ in range(2):
            copies = {name: p.clone() for name, p in policy.named_parameters()}
            for tensor in copies.values():
                tensor.retain_grad()
            self.halves.append(copies)

    def __call__(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if obs.shape[0] != self.rows:
            raise ValueError(f"HalfSplitPolicy was built for batches of {self.rows} rows, got {obs.shape[0]}")
        seen = self.normalize(obs)
        first = functional_call(self.policy, self.halves[0], (seen[:self.cut], generator))
        second = functional_call(self.policy, self.halves[1], (seen[self.cut:], generator))
        return torch.cat([first, second])

    def gradients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g_A, g_B)``, each flat over all policy parameters (zeros where a parameter got none)."""
        return tuple(torch.cat([(t.grad if t.grad is not None else torch.zeros_like(t)).reshape(-1)
                                for t in half.values()]) for half in self.halves)

    def cosine(self) -> torch.Tensor:
        """``cos(g_A, g_B)`` as a device scalar; NaN when either half's gradient is 0 or non-finite."""
        first, second = (g.double() for g in self.gradients())
        norms = first.norm() * second.norm()
        return torch.where(norms > 0, (first @ second) / norms, torch.full_like(norms, float("nan")))
