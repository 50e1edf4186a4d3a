"""``newton_hopper``: Brax's ``hopper.xml`` on Featherstone with ground contact; DiffRL's hopper task.

**Model.** Brax's ``envs/assets/hopper.xml`` (Apache-2.0; a copy in ``assets/`` with Brax's licence):
torso, thigh, leg and foot capsules in the x–z plane. Brax moved the root slide joints ``rootx``, ``rootz`` and
the hinge ``rooty`` onto the torso, so Newton loads them as one D6 root joint (x slide, z slide, y hinge) followed
by three revolute joints (thigh, leg, foot, each about −y): the layout of DiffRL's hopper, whose coordinates are
measured from the start pose (torso at 1.25 m, the foot 4 cm above the ground). Density 1000 kg/m³ (Newton's
default, DiffRL's hopper), about 15.8 kg in all. Changes, each DiffRL's hopper constant
(:class:`~mbmix_newton.configs.NewtonHopperConfig`): contact ke 2e4, kd 1e3, kf 1e3, μ 0.9 on every shape and
the ground; joint-limit ke 1e3, kd 10; hinge armature 1 and viscous damping 2 (Newton's MJCF parser reads
neither from Brax's ``<default class="main">``; the root joints keep the asset's 0).

**Actuation.** ``a ∈ [-1, 1]^3`` (thigh, leg, foot): generalized torque ``action_strength · a`` (DiffRL: 200,
equal to Brax's ``gear``).

**State** ``[N, 12]`` = ``(joint_q, joint_qd)``: ``q = (x, z, θ, thigh, leg, foot)`` (m, m, rad ×4) with ``z``
and ``θ`` zero at the start pose, ``qd`` their rates. No previous action: DiffRL's hopper observes none.

**Observation** ``[N, 11]`` (DiffRL's hopper): ``(q[1:], qd)`` -- height first, then pitch, the hinges, and
the six rates (``obs[5]`` is the forward velocity).

**Reward** (DiffRL's hopper, of the reached state; constants in the config):
``v_x + r_h + (1 − θ²/θ_max²) − 0.1·|a|²``, where ``Δh = clip(z − (−0.45 + 0.15), −1, 0.3)`` and
``r_h = Δh`` above zero, ``−200·Δh²`` below. **Termination**: ``z < −0.45`` (the torso 0.45 m below its
start; DiffRL has no angle termination for the hopper).

**Reset** (DiffRL's stochastic init): the start pose plus ``U(-0.05, 0.05)`` on x, z, the pitch, the hinge
angles and every velocity.

Where we differ from DiffRL: Newton's Featherstone and contact model instead of dflex's (contacts at the
capsule ends and spheres found by Newton's collision pipeline, not dflex's per-shape contact points), z-up
instead of y-up (no effect on the coordinates above), the torso's rotation coordinate measured about +y.
"""
from __future__ import annotations

import torch

import mbmix_fw as mb

from .ant import ground_material, set_contact_and_limits
from .bridge import NewtonSimulator
from .configs import NewtonHopperConfig

HINGES = ("thigh_joint", "leg_joint", "foot_joint")
ROOT_DOFS = 3
"""x slide, z slide, pitch hinge: the D6 root joint's dofs (no actuation)."""


def asset_path() -> str:
    """Our copy of Brax 0.14.2's ``hopper.xml`` (``assets/``, with Brax's Apache-2.0 licence beside it), so the
    ``[newton]`` extra needs no brax install."""
    from pathlib import Path
    return str(Path(__file__).resolve().parent / "assets" / "hopper.xml")


def build_hopper(config: NewtonHopperConfig):
    with open(asset_path()) as handle:
        xml = handle.read()

    def build(builder) -> None:
        builder.add_mjcf(xml, enable_self_collisions=False, parse_visuals=False)
        set_contact_and_limits(builder, config)
        labels = [label.split("/")[-1] for label in builder.joint_label]
        if labels[1:] != list(HINGES) or builder.joint_dof_count != ROOT_DOFS + len(HINGES):
            raise RuntimeError(f"hopper.xml's joints changed: {labels}")
        for dof in range(ROOT_DOFS, ROOT_DOFS + len(HINGES)):
            builder.joint_armature[dof] = config.joint_armature
            builder.joint_damping[dof] = config.joint_damping

    return build


class NewtonHopper(mb.DiffEnv):
    """DiffRL's hopper on Newton (module docstring)."""

    diverged_magnitude = 1e4
    """Observations are metres, radians and their rates: a healthy hopper stays within tens."""

    def __init__(self, config: NewtonHopperConfig, ctx: mb.BuildContext | None = None):
        ctx = ctx or mb.BuildContext.cpu()
        self.config = c = config
        self.device, self.dtype = torch.device(ctx.device), ctx.dtype
        self.num_envs, self.episode_length = c.num_envs, c.episode_length
        self.sim = NewtonSimulator(build_hopper(c), dt=c.dt, substeps=c.substeps, contacts=True, ground=True,
                                   device=self.device, ground_config=ground_material(c))
        self.nq, self.nd = self.sim.nq, self.sim.nd  # 6, 6
        self.action_dim = self.nd - ROOT_DOFS
        self.state_dim = self.nq + self.nd
        self.obs_dim = self.state_dim - 1

    def split(self, state):
        """``q [N, 6]``, ``qd [N, 6]`` (views)."""
        return state[:, :self.nq], state[:, self.nq:]

    def reset(self, n, generator=None):
        s = self.config.reset_noise
        noise = (2 * torch.rand(n, self.state_dim, generator=generator, dtype=torch.float64) - 1) * s
        return noise.to(self.device, self.dtype)  # the start pose is q = 0, at rest

    def joint_forces(self, action):
        """``[N, 6]`` float32 generalized forces: none on the root, ``action_strength · a`` on the hinges."""
        torque = self.config.action_strength * action.float()
        return torch.cat([torch.zeros(action.shape[0], ROOT_DOFS, device=action.device), torque], 1)

    def step(self, state, action, generator=None):
        q, qd = self.split(state)
        action = action.to(state.dtype).clamp(-1.0, 1.0)
        q_next, qd_next = self.sim.step(q.float().contiguous(), qd.float().contiguous(), self.joint_forces(action))
        return torch.cat([q_next.to(state.dtype), qd_next.to(state.dtype)], 1)

    def observe(self, state):
        return state[:, 1:]

    def reward(self, state, action, next_state):
        c = self.config
        q, qd = self.split(next_state)
        height = (q[:, 1] - (c.termination_height + c.termination_height_tolerance)).clamp(-1.0, c.height_reward_cap)
        height_reward = torch.where(height < 0, -c.height_penalty * height * height, c.height_reward_scale * height)
        angle_reward = 1 - q[:, 2].pow(2) / c.termination_angle ** 2
        return (qd[:, 0] + height_reward + angle_reward
                - c.action_penalty * action.to(next_state.dtype).clamp(-1.0, 1.0).pow(2).sum(-1))

    def terminated(self, state):
        return state[:, 1] < self.config.termination_height

    @torch.no_grad()
    def contact_stiffness(self, state, action, next_state):
        """AHAC's ``‖F_contact / max(|a|, 1 m/s²)‖`` (kg) per transition, the step recomputed: see
        :meth:`mbmix_newton.bridge.NewtonSimulator.contact_stiffness` (a hopper standing still scores about its
        weight, 155 N over the 1 m/s² floor; one in the air 0)."""
        q, qd = self.split(state)
        joint_f = self.joint_forces(action.to(state.dtype).clamp(-1.0, 1.0))
        return self.sim.contact_stiffness(q.float().contiguous(), qd.float().contiguous(), joint_f).to(state.dtype)
