"""``newton_cartpole``: cart-pole swing-up on Newton's Featherstone solver -- the cheap CPU learning check.

**Model** (built in code, no asset): a cart on a prismatic joint along world x and a uniform rod on a revolute
joint about y at the cart's origin, its centre of mass ``pole_length/2`` from the joint. No shapes, so no
collision detection runs. ``θ = 0`` is upright; the pole starts hanging (``θ ≈ π``). Gravity 9.81 m/s² along -z.
Only the cart is actuated: generalized force ``max_force · a`` on the prismatic dof, none on the pole.

**State** ``[N, 4] = (x, θ, ẋ, θ̇)``: Newton's ``(joint_q, joint_qd)``, unwrapped angle.

**Observation** ``[N, 5] = (x, ẋ, sin θ, cos θ, θ̇)``: SHAC's 5-dimensional cart-pole observation (the
angle enters through sin/cos so the policy sees no wrap-around).

**Reward** (SHAC's cart-pole swing-up, written from its formula; weights in the config), of the reached state::

    r = −(w_θ·θ_w² + w_θ̇·θ̇² + w_x·x² + w_ẋ·ẋ² + w_a·a²),   θ_w = atan2(sin θ, cos θ) ∈ (−π, π]

with ``w = (1, 0.1, 0.05, 0.1, 0)``. It never terminates: episodes end at ``episode_length`` (240 steps, 4 s).
Where we differ from DiffRL: its cart-pole came from a URDF (masses and lengths not reproduced here; ours
are in :class:`~mbmix_newton.configs.NewtonCartPoleConfig`, each marked), its action strength scaled a joint
actuation, ours is a force in newtons.

One bridge crossing per step (:mod:`mbmix_newton.bridge`): reward and observation are torch on the flat state.
"""
from __future__ import annotations

import math

import numpy as np
import torch

import mbmix_fw as mb

from .bridge import NewtonSimulator
from .configs import NewtonCartPoleConfig


def build_cartpole(config: NewtonCartPoleConfig):
    """``build_env(builder)``: one cart-pole (two links, two joints, one articulation) into ``builder``."""

    def build(builder) -> None:
        import newton
        import warp as wp

        c = config
        rod = c.pole_mass * c.pole_length**2 / 12  # uniform rod about its centre, across its axis
        cart = builder.add_link(mass=c.cart_mass, inertia=wp.mat33(*(np.eye(3) * 0.01).flatten()))
        pole = builder.add_link(mass=c.pole_mass, com=wp.vec3(0.0, 0.0, c.pole_length / 2),
                                inertia=wp.mat33(rod, 0.0, 0.0, 0.0, rod, 0.0, 0.0, 0.0, 1e-4 * rod))
        slider = builder.add_joint_prismatic(-1, cart, axis=newton.Axis.X)
        hinge = builder.add_joint_revolute(cart, pole, axis=newton.Axis.Y)
        builder.add_articulation([slider, hinge])

    return build


class NewtonCartPole(mb.DiffEnv):
    """Cart-pole swing-up (module docstring)."""

    diverged_magnitude = 1e4
    """Observations are metres, m/s, rad/s and sin/cos: a healthy cart-pole stays within tens."""

    def __init__(self, config: NewtonCartPoleConfig, ctx: mb.BuildContext | None = None):
        ctx = ctx or mb.BuildContext.cpu()
        self.config = c = config
        self.device, self.dtype = torch.device(ctx.device), ctx.dtype
        self.num_envs, self.episode_length = c.num_envs, c.episode_length
        self.state_dim, self.obs_dim, self.action_dim = 4, 5, 1
        self.sim = NewtonSimulator(build_cartpole(c), dt=c.dt, substeps=c.substeps, contacts=False,
                                   device=self.device)

    def reset(self, n, generator=None):
        c = self.config
        u = torch.rand(n, 4, generator=generator, device=self.device, dtype=self.dtype)
        state = (2 * u - 1) * c.reset_noise
        state[:, 1] += math.pi
        return state

    def step(self, state, action, generator=None):
        q, qd = state[:, :2].float(), state[:, 2:].float()
        force = self.config.max_force * action.to(torch.float32).clamp(-1.0, 1.0)
        joint_f = torch.cat([force[:, :1], torch.zeros_like(force[:, :1])], 1)
        q_next, qd_next = self.sim.step(q, qd, joint_f)
        return torch.cat([q_next, qd_next], 1).to(state.dtype)

    def reward(self, state, action, next_state):
        c = self.config
        x, theta, x_dot, theta_dot = next_state.unbind(-1)
        wrapped = torch.atan2(torch.sin(theta), torch.cos(theta))
        return -(c.angle_weight * wrapped.pow(2) + c.angular_velocity_weight * theta_dot.pow(2)
                 + c.position_weight * x.pow(2) + c.velocity_weight * x_dot.pow(2)
                 + c.action_weight * action.to(next_state.dtype).pow(2).sum(-1))

    def observe(self, state):
        x, theta, x_dot, theta_dot = state.unbind(-1)
        return torch.stack([x, x_dot, torch.sin(theta), torch.cos(theta), theta_dot], -1)
