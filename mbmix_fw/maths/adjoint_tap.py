"""The adjoint tap: Jacobian probes of the simulator for free, in the directions the policy gradient uses.

When the actor's loss is backpropagated through a real window, every simulator step ``s' = f(s, a)``
receives a cotangent ``u = ∂loss/∂s'`` and returns ``uᵀ∂f/∂s`` and ``uᵀ∂f/∂a`` — exactly a Jacobian
probe (:mod:`mbmix_fw.maths.probes`), computed with the simulator's own adjoint, at no extra simulator
cost. The tap wraps a dynamics' ``step`` between two identity autograd functions: the one after the
step records the cotangent arriving at ``s'``; the one before it records the gradients leaving the step
towards ``s`` and ``a``. Because the tapped inputs feed nothing but the step, those gradients are the
step's own VJP, not the accumulated gradient of ``s`` (which also flows through rewards and
observations). It works for any dynamics — torch-native, or a JAX/Warp bridge — since it never looks
inside the step.

Probe directions: the policy's own cotangents, normalised to unit length (the targets scaled by the
same factor), so a world model fitted on them learns its Jacobian in the directions through which the
policy gradient flows; one literal reading of MB-MIX's remark that its model training and policy
training are consistent (our reconstruction; the paper's method section is not available to us).
Rows whose cotangent is zero or non-finite carry no information and are dropped.
"""
from __future__ import annotations

import attrs
import torch

from ..contracts.rollout_types import Dynamics
from ..contracts.world_model import TransitionBatch


@attrs.define(eq=False)
class _Record:
    """One tapped step: its inputs and output (detached) and, after backward, the cotangent and VJPs."""

    state: torch.Tensor
    action: torch.Tensor
    next_state: torch.Tensor | None = None
    u: torch.Tensor | None = None
    g_s: torch.Tensor | None = None
    g_a: torch.Tensor | None = None


class _TapIn(torch.autograd.Function):
    """Identity on ``(state, action)``; backward records the step's VJP towards its inputs."""

    @staticmethod
    def forward(ctx, state, action, record):
        ctx.record = record
        return state.view_as(state), action.view_as(action)

    @staticmethod
    def backward(ctx, grad_state, grad_action):
        ctx.record.g_s, ctx.record.g_a = grad_state, grad_action
        return grad_state, grad_action, None


class _TapOut(torch.autograd.Function):
    """Identity on ``next_state``; backward records the cotangent arriving at it."""

    @staticmethod
    def forward(ctx, next_state, record):
        ctx.record = record
        return next_state.view_as(next_state)

    @staticmethod
    def backward(ctx, grad):
        ctx.record.u = grad
        return grad, None


class TappedDynamics:
    """``dynamics`` with every ``step`` tapped; a :class:`~mbmix_fw.Dynamics` itself.

    Rolling it out uses the env's ``step`` then ``score`` (not a fused ``transition``): the tap needs the
    step's output before rewards and observations are computed from it.
    """

    is_simulator = False  # the tap acts on the step: the env scores what it returns

    def __init__(self, dynamics: Dynamics, tap: "AdjointTap"):
        self.dynamics, self.tap = dynamics, tap

    def step(self, state: torch.Tensor, action: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self.dynamics.step(state, action, generator)
        record = _Record(state.detach(), action.detach())
        self.tap.records.append(record)
        tapped_state, tapped_action = _TapIn.apply(state, action, record)
        next_state = self.dynamics.step(tapped_state, tapped_action, generator)
        record.next_state = next_state.detach()
        return _TapOut.apply(next_state, record)


class AdjointTap:
    """Collects the probes of every tapped step of one window; :meth:`probes` reads them after backward."""

    def __init__(self) -> None:
        self.records: list[_Record] = []

    def wrap(self, dynamics: Dynamics) -> TappedDynamics:
        return TappedDynamics(dynamics, self)

    def probes(self) -> TransitionBatch | None:
        """The tapped transitions with one unit probe each (``probe_u [B, 1, S]``), or ``None`` before
        any backward reached the tap. Rows with a zero or non-finite cotangent or VJP are left out."""
        done = [r for r in self.records if r.u is not None and r.g_s is not None and r.g_a is not None]
        if not done:
            return None
        state = torch.cat([r.state for r in done])
        action = torch.cat([r.action for r in done])
        next_state = torch.cat([r.next_state for r in done])
        u = torch.cat([r.u for r in done])
        g_a = torch.cat([r.g_a for r in done])
        g_s = torch.cat([r.g_s for r in done])
        norm = u.norm(dim=-1, keepdim=True)
        finite = torch.isfinite(torch.cat([state, action, next_state, u, g_s, g_a], -1)).all(-1)
        keep = finite & (norm.squeeze(-1) > 0)
        scale = norm[keep]
        return TransitionBatch(state[keep], action[keep], next_state[keep], (u[keep] / scale).unsqueeze(1),
                               (g_s[keep] / scale).unsqueeze(1), (g_a[keep] / scale).unsqueeze(1))

    def clear(self) -> None:
        self.records.clear()
