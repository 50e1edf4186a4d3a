"""A block pushed against a wall with a penalty-spring contact: a task whose simulator gradients degrade as
one knob, the wall's stiffness, grows.

Why it is here: first-order methods (SHAC, MIX, MB-MIX) trust the simulator's Jacobians. Suh et al. 2022
("Do differentiable simulators give better policy gradients?") show where that trust breaks: stiff
contact makes the exact gradient of a rollout high-variance (and, in the rigid limit, blind to the
discontinuity). This env puts that failure on a dial, cheaply enough for many seeds on a CPU, so a
question such as "does a model that matches these Jacobians help, or one smoother than them?" can be
measured across it.

Physics (1-D, SI units). State ``[N, 2] = (x, v)``: the block's position and velocity; the wall's surface
is at ``x = 0`` and the block starts ``init_distance`` metres left of it. Action ``[N, 1]`` in ``[-1, 1]``
pushes with ``u = max_force · a``. With penetration ``d = x`` (positive inside the wall), each substep of
length ``h = dt / n`` is semi-implicit Euler::

    f  = u − b·v − k·φ(d) − c·v·χ(d)          φ(d) = max(0, d),  χ(d) = [d > 0]
    v' = v + h·f/m,    x' = x + h·v'

(Kelvin–Voigt contact: a spring k and a damper c acting only in contact, plus ground friction b.) With
``contact_smoothing = w > 0``, ``φ(d) = w·softplus(d/w)`` and ``χ(d) = sigmoid(d/w)``: a force field that
reaches ``w·ln 2·k`` outside the wall, the smoothing of Suh et al.'s randomized-smoothing discussion
made deterministic.

Stability. Semi-implicit Euler on an undamped spring is stable for ``h·sqrt(k/m) < 2``; damping adds a
rate ``(c+b)/m``. Unless ``substeps`` is set, ``n`` is the fewest substeps with
``h·(sqrt(k/m) + (c+b)/m) ≤ courant`` (default 0.5: a 4× margin on the bound, about 12 substeps per
contact period). Defaults (m = 1, c = b = 1, dt = 0.05): k = 1e2 → 2 substeps, 1e3 → 4, 1e4 → 11,
1e5 → 33.

What the knob changes. In contact the block is a damped oscillator of frequency ``ω = sqrt(k/m)`` and
damping ratio ``ζ = c / (2 sqrt(k m))``. Over one control step its state Jacobian is close to
``[[cos ωΔ, sin ωΔ / ω], [−ω sin ωΔ, cos ωΔ]]·e^{−cΔ/2m}`` (``Δ`` the time spent in contact), so:

- the entry ``∂v'/∂x`` grows like ``sqrt(k)`` and its sign is the phase of an oscillation the policy
  does not see: across random starts the gradient of a window's return becomes large and of random
  sign — high variance, little information;
- with ``c`` fixed the decay per step ``e^{−cΔ/2m}`` does not depend on k, while ``ζ`` falls, so the
  restitution of an impact ``e^{−πζ/sqrt(1−ζ²)}`` rises towards 1: stiffer walls bounce more;
- in the rigid limit the return is discontinuous in the actions where an impact starts or stops,
  which no Jacobian of the sampled trajectory reports.

At small k the wall is soft (a block pushed with 5 N sinks 5 cm at k = 100) and the Jacobians are
O(1) and informative. The task is the same at every k: bring the block to the wall and hold it
there.

Reward ``−((x − x_goal)² + action_cost·a²)`` on the state before the step, goal ``x_goal = 0`` (the
wall's surface): the policy has to arrive fast without bouncing back, then press. Observation
``(x − x_goal, v)``. Episodes never terminate.

``contact_stiffness`` reports AHAC's measure at the start of each step: the contact force over the
block's acceleration floored at 1 m/s², ``|k·φ(d) + c·v·χ(d)| / max(|f/m|, 1)`` (kg).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

import mbmix_fw as mb

from .configs import WallPushConfig


class WallPush(mb.DiffEnv):
    """A block pushed against a penalty-spring wall (module docstring: physics, stability, the knob)."""

    diverged_magnitude = 1e4
    """Positions of metres and speeds of metres per second: 1e4 is far outside anything the wall allows."""

    def __init__(self, config: WallPushConfig, ctx: mb.BuildContext | None = None):
        ctx = ctx or mb.BuildContext.cpu()
        self.config = config
        self.num_envs, self.episode_length = config.num_envs, config.episode_length
        self.state_dim, self.obs_dim, self.action_dim = 2, 2, 1
        self.device, self.dtype = ctx.device, ctx.dtype
        self.substeps = config.substep_count()
        self.goal = 0.0

    def reset(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.config
        u = torch.rand(n, 2, generator=generator, device=self.device, dtype=self.dtype)
        low, high = c.init_distance
        x = -(low + (high - low) * u[:, 0])
        v = (2 * u[:, 1] - 1) * c.init_max_speed
        return torch.stack([x, v], -1)

    def force(self, action: torch.Tensor) -> torch.Tensor:
        """The push ``[N]`` (N) of actions ``[N, 1]`` (clamped to the contract's ``[-1, 1]``)."""
        return self.config.max_force * action[:, 0].clamp(-1.0, 1.0)

    def contact_force(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The wall's push on the block ``[N]`` (N, towards −x): ``k·φ(d) + c·v·χ(d)`` at ``d = x``."""
        c = self.config
        if c.contact_smoothing > 0:
            w = c.contact_smoothing
            return c.stiffness * w * F.softplus(x / w) + c.contact_damping * v * torch.sigmoid(x / w)
        inside = (x > 0).to(x.dtype)
        return c.stiffness * x.clamp_min(0.0) + c.contact_damping * v * inside

    def step(self, state, action, generator=None):
        c = self.config
        x, v = state[:, 0], state[:, 1]
        u = self.force(action)
        h = c.dt / self.substeps
        for _ in range(self.substeps):
            v = v + h / c.mass * (u - c.drag * v - self.contact_force(x, v))
            x = x + h * v
        return torch.stack([x, v], -1)

    def reward(self, state, action, next_state):
        a = action[:, 0].clamp(-1.0, 1.0)
        return -((state[:, 0] - self.goal).pow(2) + self.config.action_cost * a.pow(2))

    def observe(self, state):
        return torch.stack([state[:, 0] - self.goal, state[:, 1]], -1)

    def contact_stiffness(self, state, action, next_state):
        c = self.config
        x, v = state[:, 0], state[:, 1]
        contact = self.contact_force(x, v)
        accel = (self.force(action) - c.drag * v - contact) / c.mass
        return (contact.abs() / accel.abs().clamp_min(1.0)).detach()
