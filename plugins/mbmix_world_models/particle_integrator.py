"""The ``integrator`` architecture of ``particle_gnn``: learned pairwise and per-particle forces, integrated
by the env's own semi-implicit Euler substeps.

Why: on the cloth one env step is 8 substeps of stiff springs (``dt²·k/m ≈ 8``): the one-step map is an
oscillatory operator reaching several cells, which a few rounds of one-shot message passing fit badly (its
state Jacobian stays at a relative error of ~0.8, ``benchmarks/cloth_model_accuracy.py``). A force law is
local and simple; integrating it the way the env does reproduces the reach and the oscillation exactly.

Per substep ``k`` of ``K`` (``h = dt / K``), for every coupling ``(i, j)`` (each spring once) with
``d = x_j − x_i``, ``n = d / |d|``:

- ``f_ij = (k_kind·(|d| − L) + σ_f·φ(strain_n, closing_n, kind)) · n`` on ``i`` and ``−f_ij`` on ``j``
  (Newton's third law, so momentum is conserved by construction): a linear spring with a learned stiffness
  per kind plus an MLP ``φ`` shared by every coupling for the rest (damping, nonlinearity), fed
  ``strain = |d| / L − 1`` and ``closing = (v_j − v_i)·n``, each normalised by its running statistics;
  ``σ_f`` is the rms of ``σ_a``;
- a per-particle term ``ψ(height_n, v_n)`` (gravity, drag, ground contact, friction);
- ``a = σ_a ⊙ (Σ f + ψ) + μ_a`` with ``σ_a``, ``μ_a`` the running statistics of ``Δv / dt``;
- ``v ← v + h·a``, ``x ← x + h·v`` for free particles; driven particles move at their exactly known next
  velocity: ``x_k = x_K − (K − 1 − k)·h·v_K``, ``v_k = v_K`` — functions of ``exact_step``'s outputs only, so
  their Jacobians are the env's (the cloth's held particles follow their gripper, not their own old position).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

_ACTIVATIONS = {"silu": F.silu, "elu": F.elu, "tanh": torch.tanh}


class LearnedForces(nn.Module):
    """``φ`` (per coupling; one hidden layer of ``edge_width``, or per-kind affine when it is 0) and ``ψ`` (per
    particle; two hidden layers of ``node_width``), initialised from ``generator``."""

    def __init__(self, kinds: int, node_features: int, dim: int, edge_width: int, node_width: int,
                 activation: str, generator: torch.Generator, stiffness: float = 1.0):
        super().__init__()
        self.act = _ACTIVATIONS[activation]

        def linear(fan_in, fan_out, gain=1.0):
            bound = fan_in ** -0.5
            w = nn.Parameter((torch.rand(fan_in, fan_out, generator=generator) * 2 - 1) * bound * gain)
            b = nn.Parameter((torch.rand(fan_out, generator=generator) * 2 - 1) * bound * gain)
            return w, b

        self.log_stiffness = nn.Parameter(torch.full((kinds,), math.log(stiffness)))
        """Per kind, the linear spring's stiffness per unit mass (1/s²): force ``k·(|d| − L)`` along ``n``."""
        self.edge_width = edge_width
        if edge_width:
            self.edge_w1, self.edge_b1 = linear(2, edge_width)
            self.kind_bias = nn.Parameter(torch.randn(kinds, edge_width, generator=generator) * 0.1)
            self.edge_w2, self.edge_b2 = linear(edge_width, 1, gain=0.1)
        else:  # linear springs only: per kind, a learned affine map of (strain_n, closing_n) on top of k
            self.edge_linear = nn.Parameter(torch.zeros(kinds, 2))
            self.edge_bias = nn.Parameter(torch.zeros(kinds, 1))
        self.node_w1, self.node_b1 = linear(node_features, node_width)
        self.node_w2, self.node_b2 = linear(node_width, node_width)
        self.node_w3, self.node_b3 = linear(node_width, dim, gain=0.1)

    def pair_law(self, kinds: torch.Tensor, rest: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 unit: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The scalar force per unit mass along each coupling, ``law(strain [E, B], closing [E, B]) -> [E, B]``
        (positive pulls the ends together): ``k_kind·L·strain + unit·φ(strain_n, closing_n)``.

        ``kinds [E]``, ``rest [E, 1]`` (``L``); ``mean``, ``std`` ``[2]``: the statistics normalising
        (strain, closing) for ``φ``; ``unit``: the scale of ``φ``'s output. Why a closure: the per-kind
        parameters and the normalisation are folded into per-coupling coefficients once per step, so each
        substep runs a handful of ``[E, B]`` operations (for the linear law: ``a·strain + b·closing + c``)."""
        spring = self.log_stiffness.exp()[kinds].unsqueeze(-1) * rest  # [E, 1]
        if not self.edge_width:
            slope = self.edge_linear[kinds] * (unit / std)  # [E, 2]
            strain_coefficient, closing_coefficient = spring + slope[:, :1], slope[:, 1:]
            constant = self.edge_bias[kinds] * unit - (slope * mean).sum(-1, keepdim=True)
            return lambda strain, closing: strain_coefficient * strain + closing_coefficient * closing + constant
        w1 = self.edge_w1 / std.unsqueeze(-1)  # [2, W]
        b1 = (self.edge_b1 - mean @ w1 + self.kind_bias[kinds]).T.unsqueeze(-1)  # [W, E, 1]
        w1 = w1.unsqueeze(-1).unsqueeze(-1)  # [2, W, 1, 1]
        w2, b2 = self.edge_w2.T * unit, self.edge_b2 * unit  # [1, W], [1]

        def law(strain: torch.Tensor, closing: torch.Tensor) -> torch.Tensor:
            hidden = self.act(w1[0] * strain + w1[1] * closing + b1)  # [W, E, B]
            return spring * strain + (w2 @ hidden.flatten(1)).view_as(strain) + b2

        return law

    def node(self, features: torch.Tensor) -> torch.Tensor:
        """``[F, N] -> [d, N]`` per-particle accelerations (normalised), features first (one matrix product
        per layer over every particle of every env)."""
        hidden = self.act(torch.addmm(self.node_b1.unsqueeze(-1), self.node_w1.T, features))
        hidden = self.act(torch.addmm(self.node_b2.unsqueeze(-1), self.node_w2.T, hidden))
        return torch.addmm(self.node_b3.unsqueeze(-1), self.node_w3.T, hidden)
