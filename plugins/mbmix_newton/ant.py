"""``newton_ant``: Newton's ``nv_ant.xml`` on Featherstone with ground contact; DiffRL's ant task.

**Model.** Newton's own asset ``nv_ant.xml`` (Apache-2.0, ``newton.examples.get_asset``): a torso sphere on a
free joint and four legs of two hinges (hip, ankle), 9 bodies, 14 dof. Changes to the asset, each DiffRL's:
geometry density 1000 kg/m³ (the asset says 5; DiffRL's MJCF parser used 1000, and its action strength of
200 N·m and contact stiffness assume that mass), contact ke 4e3, kd 1e3, kf 3e2, μ 0.75 on every shape and the
ground, joint-limit ke 1e3, kd 10. The asset's joint armature (0.01) and damping (0.1) are kept. Self
collisions are off (the asset spawns with torso–ankle contacts otherwise; DiffRL's ant had none either).

**Actuation.** Action ``a ∈ [-1, 1]^8`` in hinge-dof order ``(hip_1, ankle_1, hip_2, ankle_2, hip_3, ankle_3,
hip_4, ankle_4)`` (the asset's joint order; its ``<motor>`` list is in another order and its ``gear`` 15 is not
used): generalized torque ``action_strength · a`` (DiffRL: 200).

**State** ``[N, 15 + 14 + 8]`` = ``(joint_q, joint_qd, previous action)``. ``joint_q`` = torso position (3),
torso quaternion (4, xyzw, Newton's order), hinge angles (8); ``joint_qd`` = torso linear velocity (3) and
angular velocity (3) in the world frame (Newton's free-joint convention), hinge rates (8). The previous action
is part of the state because DiffRL's observation holds it (and a world model must see it too).

**Observation** ``[N, 37]`` (DiffRL's ant, z-up instead of its y-up): torso height (1), torso quaternion (4),
linear velocity (3), angular velocity (3), hinge angles (8), 0.1 × hinge rates (8), up projection (1: the z
component of the torso's z axis), heading projection (1: the x component of the torso's x axis, the target
direction being +x), previous action (8).

**Caveat, measured**: with these constants a passive ant (zero action) does not stand: its legs fold to
their limits and the torso settles at about 0.16 m after 30 steps (half a second), below the 0.27 m
termination, so untrained episodes are short. Whether DiffRL's dflex ant stood at rest was not checked here
(its MJCF and dflex's contact model differ from Newton's: one penalty contact per sphere or capsule end).

**Reward** (DiffRL's ant, of the reached state): ``v_x + 0.1·up + heading + (height − 0.27) − w_a·|a|²``
(``w_a = 0``). **Termination**: torso height below 0.27 m.

**Reset** (ours, in the spirit of DiffRL's stochastic init): the start pose is the asset's torso position
(0.75 m high) with hips at 0 and ankles at ±1 rad (DiffRL's start angles; the asset's 0 lies outside its ankle
ranges), plus ``U(-1, 1)·reset_noise`` on the torso position, ``2·reset_noise`` on the hinge angles, a yaw of
``U(-1, 1)·reset_noise`` rad, and ``U(-1, 1)·reset_noise`` on every velocity.
"""
from __future__ import annotations

import torch

import mbmix_fw as mb

from .bridge import NewtonSimulator
from .configs import NewtonAntConfig
from .floating_base import FloatingBaseRobot, up_and_heading

HINGES = ("hip_1", "ankle_1", "hip_2", "ankle_2", "hip_3", "ankle_3", "hip_4", "ankle_4")
START_ANGLES = (0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0)
"""DiffRL's ant start angles (rad), hinge-dof order; each ankle's inside its range in ``nv_ant.xml``."""
CONTACTS_PER_ENV = 32
"""The contact buffer per ant: a torso sphere and 12 capsules touch the ground (self collisions off; the asset's
own floor plane makes none), at most one contact per sphere and two per capsule: 25 (an ant lying flat has
exactly 25). Newton's own bound, from every shape pair, is 65."""
DENSITY = 1000.0
"""DiffRL's shape density (kg/m³) for the ant; ``nv_ant.xml`` says 5."""


def asset_xml() -> str:
    """``nv_ant.xml``'s text with DiffRL's density (the asset's default geom class sets ``density="5.0"``)."""
    import newton.examples

    with open(newton.examples.get_asset("nv_ant.xml")) as handle:
        text = handle.read()
    if 'density="5.0"' not in text:
        raise RuntimeError("nv_ant.xml changed: its default geom density is no longer 5.0; check mbmix_newton.ant")
    return text.replace('density="5.0"', f'density="{DENSITY:g}"')


def set_contact_and_limits(builder, config) -> None:
    """DiffRL's contact material on every shape and its joint-limit stiffness on every dof of ``builder``."""
    for i in range(len(builder.shape_material_ke)):
        builder.shape_material_ke[i] = config.contact_ke
        builder.shape_material_kd[i] = config.contact_kd
        builder.shape_material_kf[i] = config.contact_kf
        builder.shape_material_mu[i] = config.contact_mu
    for i in range(len(builder.joint_limit_ke)):
        builder.joint_limit_ke[i] = config.limit_ke
        builder.joint_limit_kd[i] = config.limit_kd


def ground_material(config):
    """The ground plane's ShapeConfig with DiffRL's contact material."""
    import newton
    return newton.ModelBuilder.ShapeConfig(ke=config.contact_ke, kd=config.contact_kd, kf=config.contact_kf,
                                           mu=config.contact_mu)


def build_ant(config: NewtonAntConfig):
    xml = asset_xml()

    def build(builder) -> None:
        builder.add_mjcf(xml, floating=True, enable_self_collisions=False, parse_visuals=False)
        set_contact_and_limits(builder, config)
        labels = [label.split("/")[-1] for label in builder.joint_label]
        order = [labels.index(name) for name in HINGES]
        if order != sorted(order):
            raise RuntimeError(f"nv_ant.xml's hinge order changed: {labels}")

    return build


class NewtonAnt(FloatingBaseRobot):
    """DiffRL's ant on Newton (module docstring)."""

    diverged_magnitude = 1e4
    """Observations are metres, m/s, rad, rad/s (×0.1 for hinge rates), projections and actions: a healthy ant
    stays within tens."""

    def __init__(self, config: NewtonAntConfig, ctx: mb.BuildContext | None = None):
        ctx = ctx or mb.BuildContext.cpu()
        self.config = c = config
        self.device, self.dtype = torch.device(ctx.device), ctx.dtype
        self.num_envs, self.episode_length = c.num_envs, c.episode_length
        self.sim = NewtonSimulator(build_ant(c), dt=c.dt, substeps=c.substeps, contacts=True, ground=True,
                                   device=self.device, ground_config=ground_material(c),
                                   contacts_per_env=CONTACTS_PER_ENV)
        self.nq, self.nd = self.sim.nq, self.sim.nd  # 15, 14
        self.action_dim = self.nd - 6
        self.state_dim = self.nq + self.nd + self.action_dim
        self.obs_dim = 37
        start = self.sim.initial_q()[0].to(self.device, torch.float64)
        start[7:] = torch.tensor(START_ANGLES, dtype=torch.float64)
        self.start_q = start

    def reset(self, n, generator=None):
        s = self.config.reset_noise
        like = dict(device=self.device, dtype=torch.float64)
        u = lambda *shape: 2 * torch.rand(*shape, generator=generator, **like) - 1  # noqa: E731
        q = self.start_q.expand(n, -1).clone()
        q[:, :3] += s * u(n, 3)
        yaw = s * u(n)
        q[:, 3:7] = torch.stack([torch.zeros_like(yaw), torch.zeros_like(yaw), torch.sin(yaw / 2),
                                 torch.cos(yaw / 2)], -1)
        q[:, 7:] += 2 * s * u(n, self.nq - 7)
        qd = s * u(n, self.nd)
        return torch.cat([q, qd, torch.zeros(n, self.action_dim, **like)], 1).to(self.dtype)

    def joint_forces(self, action):
        """``[N, 14]`` float32 generalized forces: none on the free root, ``action_strength · a`` on the hinges."""
        torque = self.config.action_strength * action.float()
        return torch.cat([torch.zeros(action.shape[0], 6, device=action.device), torque], 1)

    def observe(self, state):
        q, qd, previous = self.split(state)
        up, heading = up_and_heading(q[:, 3:7])
        return torch.cat([q[:, 2:3], q[:, 3:7], qd[:, :3], qd[:, 3:6], q[:, 7:], 0.1 * qd[:, 6:],
                          up[:, None], heading[:, None], previous], 1)

    def reward(self, state, action, next_state):
        c = self.config
        q, qd, _ = self.split(next_state)
        up, heading = up_and_heading(q[:, 3:7])
        return (qd[:, 0] + c.up_weight * up + c.heading_weight * heading
                + c.height_weight * (q[:, 2] - c.termination_height)
                - c.action_penalty * action.to(next_state.dtype).pow(2).sum(-1))

    def terminated(self, state):
        return state[:, 2] < self.config.termination_height

