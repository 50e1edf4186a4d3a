"""Differentiable pendulum swing-up with the dynamics and reward of gym's ``Pendulum-v1``.

Why it is here: the smallest env on which a first-order method (SHAC, MB-MIX) has to *learn*
something non-trivial (swing up, then balance) in a few CPU minutes, with a reward scale everyone knows
(random policy ≈ -1200…-1500 per 200-step episode, a good swing-up ≈ -150…-300).

State ``[N, 2] = (θ, θ̇)`` with θ = 0 upright, θ *not* wrapped (as in gym; reward and observation are
2π-periodic so the wrap would only add a discontinuity). Observation ``[N, 3] = (cos θ, sin θ, θ̇)``.
Action ``[N, 1]`` in ``[-1, 1]``, torque ``u = max_torque · clamp(a, -1, 1)`` (the clamp is the identity
for the tanh-squashed policy; actions outside the contract get zero gradient).

Semi-implicit Euler, exactly gym's update::

    θ̇' = limit(θ̇ + (3g/(2l)·sin θ + 3/(m l²)·u)·dt),   θ' = θ + θ̇'·dt

Differentiability choices (documented deviations from gym):

- ``limit``: gym clamps θ̇' to ``[-max_speed, max_speed]``; a hard clamp has zero gradient once the
  pendulum spins fast, which silently cuts the BPTT signal. By default we use a smooth limit,
  ``x - w·softplus((x - M)/w) + w·softplus((-x - M)/w)`` with width ``w = speed_limit_width``: it
  equals ``x`` to within ``w·e^{-(M-|x|)/w}`` inside the limit and saturates at ``±M`` (overshooting it
  by at most ``w·ln 2`` at ``|x| = M``); its derivative is a sigmoid, never exactly zero. ``w = 0``
  restores gym's hard clamp.
- reward ``-(norm(θ)² + 0.1·θ̇² + 0.001·u²)`` on the state *before* the step (gym's convention), with
  ``norm(θ) = ((θ + π) mod 2π) - π``: differentiable with derivative 1 everywhere except at the bottom
  (θ = π), a measure-zero set where the cost is continuous.
"""
from __future__ import annotations

import math

import torch

import mbmix_fw as mb

from .configs import PendulumConfig


def angle_normalize(theta: torch.Tensor) -> torch.Tensor:
    """Wrap angles to ``[-π, π)``; derivative 1 almost everywhere."""
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


def smooth_limit(x: torch.Tensor, limit: float, width: float) -> torch.Tensor:
    """``clamp(x, -limit, limit)`` for ``width = 0``; a softplus-smoothed clamp for ``width > 0``."""
    if width == 0:
        return x.clamp(-limit, limit)
    sp = torch.nn.functional.softplus
    return x - width * sp((x - limit) / width) + width * sp((-x - limit) / width)


class Pendulum(mb.DiffEnv):
    """Gym ``Pendulum-v1`` as a :class:`mbmix_fw.DiffEnv` (see the module docstring for the contract)."""

    def __init__(self, config: PendulumConfig, ctx: mb.BuildContext | None = None):
        ctx = ctx or mb.BuildContext.cpu()
        self.config = config
        self.num_envs, self.episode_length = config.num_envs, config.episode_length
        self.state_dim, self.obs_dim, self.action_dim = 2, 3, 1
        self.device, self.dtype = ctx.device, ctx.dtype

    def reset(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(n, 2, generator=generator, device=self.device, dtype=self.dtype)
        scale = torch.tensor([math.pi, self.config.init_max_speed], device=self.device, dtype=self.dtype)
        return (2 * u - 1) * scale

    def torque(self, action: torch.Tensor) -> torch.Tensor:
        """Torque ``[N]`` (N·m) of actions ``[N, 1]``."""
        return self.config.max_torque * action[:, 0].clamp(-1.0, 1.0)

    def step(self, state, action, generator=None):
        c = self.config
        theta, speed = state[:, 0], state[:, 1]
        accel = 3 * c.gravity / (2 * c.length) * torch.sin(theta) + 3.0 / (c.mass * c.length**2) * self.torque(action)
        new_speed = smooth_limit(speed + accel * c.dt, c.max_speed, c.speed_limit_width)
        return torch.stack([theta + new_speed * c.dt, new_speed], dim=-1)

    def reward(self, state, action, next_state):
        u = self.torque(action)
        return -(angle_normalize(state[:, 0]).pow(2) + 0.1 * state[:, 1].pow(2) + 0.001 * u.pow(2))

    def observe(self, state):
        theta = state[:, 0]
        return torch.stack([torch.cos(theta), torch.sin(theta), state[:, 1]], dim=-1)
