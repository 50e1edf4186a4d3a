"""A differentiable double integrator (a cart on a frictional rail) as an mbmix-fw env plugin.

State ``[N, 2] = (x, v)``: position (m) and velocity (m/s). Action ``[N, 1]`` in ``[-1, 1]``, force
``F = max_force · a`` (N). Semi-implicit Euler with viscous friction::

    v' = v + (F / mass - friction · v) · dt,    x' = x + v' · dt

Reward ``-(x'² + 0.1 v'² + 0.01 a²)``: bring the cart to rest at the origin with little effort.
Everything is plain torch, so ``step`` and ``reward`` are differentiable w.r.t. state and action.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import mbmix_fw as mb


class DoubleIntegratorConfig(mb.EnvConfig):
    kind: Literal["double_integrator"] = "double_integrator"
    num_envs: int = Field(16, ge=1)
    """Carts simulated in parallel for training."""
    episode_length: int = Field(100, ge=1)
    """Steps per episode."""
    dt: float = Field(0.05, gt=0)
    """Integration step (s)."""
    mass: float = Field(1.0, gt=0)
    """Cart mass (kg)."""
    max_force: float = Field(2.0, gt=0)
    """Force (N) applied for action ±1."""
    friction: float = Field(0.1, ge=0)
    """Viscous friction coefficient (1/s)."""
    init_range: float = Field(1.0, ge=0)
    """Initial position ~ U(-init_range, init_range); initial velocity ~ U(-init_range/2, init_range/2)."""


class DoubleIntegrator(mb.DiffEnv):
    """The env itself: stateless and batched, as :class:`mbmix_fw.DiffEnv` requires."""

    def __init__(self, config: DoubleIntegratorConfig, ctx: mb.BuildContext | None = None):
        ctx = ctx or mb.BuildContext.cpu()
        self.config = config
        self.num_envs, self.episode_length = config.num_envs, config.episode_length
        self.state_dim, self.obs_dim, self.action_dim = 2, 2, 1
        self.device, self.dtype = ctx.device, ctx.dtype

    def reset(self, n, generator=None):
        u = torch.rand(n, 2, generator=generator, device=self.device, dtype=self.dtype)
        scale = torch.tensor([1.0, 0.5], device=self.device, dtype=self.dtype) * self.config.init_range
        return (2 * u - 1) * scale

    def step(self, state, action, generator=None):
        c = self.config
        x, v = state[:, 0], state[:, 1]
        force = c.max_force * action[:, 0]
        v_next = v + (force / c.mass - c.friction * v) * c.dt
        return torch.stack([x + v_next * c.dt, v_next], dim=-1)

    def reward(self, state, action, next_state):
        return -(next_state[:, 0].pow(2) + 0.1 * next_state[:, 1].pow(2) + 0.01 * action[:, 0].pow(2))

    def observe(self, state):
        return state


@mb.hookimpl
def register_envs(register):
    register(DoubleIntegratorConfig, DoubleIntegrator)
