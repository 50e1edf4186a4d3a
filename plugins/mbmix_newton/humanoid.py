"""``newton_humanoid``: Newton's ``nv_humanoid.xml`` on Featherstone with ground contact; DiffRL's humanoid task.

**Model.** Newton's own asset ``nv_humanoid.xml`` (``newton.examples.get_asset``): a torso on a free joint,
13 bodies, 21 hinges grouped by Newton's parser into D6 joints (abdomen z–y, abdomen x, each hip x–z–y, knee,
ankle y–x, shoulder 1–2, elbow), 27 dof, about 40.8 kg. The asset's per-joint stiffness (springs to the zero
pose), damping and armature are kept: DiffRL's humanoid loads them from its MJCF too (``load_stiffness``,
``load_armature``). Changes, each DiffRL's humanoid constant (:class:`~mbmix_newton.configs.NewtonHumanoidConfig`):
contact ke 2e4, kd 5e3, kf 1e3, μ 0.75 on every shape and the ground; joint-limit ke 1e3, kd 10; 48 substeps
per 1/60-s step. Sites are not parsed (the asset's touch sensors would otherwise become colliders); self
collisions are off (DiffRL's dflex humanoid had none).

**Actuation.** ``a ∈ [-1, 1]^21`` in Newton's dof order (the module's :data:`HINGES`): generalized torque
``0.35 · strength · a`` with DiffRL's motor strengths by joint (:data:`MOTOR_STRENGTHS`; the asset's ``gear``
values are not used: they are another tuning, e.g. 135 on a hip's y axis where DiffRL applies 0.35·600 = 210).

**State** ``[N, 28 + 27 + 21]`` = ``(joint_q, joint_qd, previous action)``, laid out as the ant's
(:mod:`mbmix_newton.ant`).

**Observation** ``[N, 76]`` (DiffRL's humanoid, z-up instead of its y-up): torso height (1), torso quaternion
(4, xyzw), linear velocity (3), angular velocity (3), hinge angles (21), 0.1 × hinge rates (21), up projection
(1: the z component of the torso's z axis), heading projection (1: the torso's x axis dotted with the
horizontal unit vector towards DiffRL's target 200 m ahead on +x), previous action (21).

**Reward** (DiffRL's humanoid, of the reached state): ``v_x + 0.1·up + heading + r_h − 0.002·|a|²`` with
``Δh = clip(h − (0.74 + 0.1), −1, 0.1)``, ``r_h = 10·Δh`` above zero and ``−200·Δh²`` below.
**Termination**: torso height below 0.74 m.

**Reset** (DiffRL's stochastic init): torso at (0, 0, 1.35) upright with the hinges at 0, plus ``U(-0.1, 0.1)``
m on the position, a tilt of ``U(-π/24, π/24)`` about a random axis, ``U(-0.2, 0.2)`` on the hinge angles and
``U(-0.25, 0.25)`` on every velocity.

Where we differ from DiffRL: Newton's asset and contact model instead of dflex's (DiffRL ships its own
humanoid MJCF, not copied here; its non-commercial licence), z-up, and no NaN-masking of gradients or rewards
(DiffRL zeroes non-finite ones inside the env; here the trainer's guard skips and counts non-finite updates).
"""
from __future__ import annotations

import math

import torch

import mbmix_fw as mb

from .ant import ground_material, set_contact_and_limits
from .bridge import NewtonSimulator
from .configs import NewtonHumanoidConfig

HINGES = ("abdomen_z", "abdomen_y", "abdomen_x",
          "right_hip_x", "right_hip_z", "right_hip_y", "right_knee", "right_ankle_y", "right_ankle_x",
          "left_hip_x", "left_hip_z", "left_hip_y", "left_knee", "left_ankle_y", "left_ankle_x",
          "right_shoulder1", "right_shoulder2", "right_elbow", "left_shoulder1", "left_shoulder2", "left_elbow")
"""Newton's dof order of ``nv_humanoid.xml``'s hinges (checked against the parsed joints at build)."""
MOTOR_STRENGTHS = {"abdomen": 200.0, "hip_x": 200.0, "hip_z": 200.0, "hip_y": 600.0, "knee": 400.0,
                   "ankle": 100.0, "shoulder": 100.0, "elbow": 200.0}
"""DiffRL's humanoid motor strengths (N·m before its scale 0.35) by joint: its list of 21 values, read by
joint name (abdomen 200 ×3; per leg hip x, z 200, hip y 600, knee 400, ankles 100; per arm shoulders 100,
elbow 200)."""
TARGET_AHEAD = 200.0
"""DiffRL's humanoid heads for a target 200 m along +x from its start."""


def strength_of(hinge: str) -> float:
    return next(value for key, value in MOTOR_STRENGTHS.items() if key in hinge)


def build_humanoid(config: NewtonHumanoidConfig):
    import newton.examples

    with open(newton.examples.get_asset("nv_humanoid.xml")) as handle:
        xml = handle.read()

    def build(builder) -> None:
        builder.add_mjcf(xml, floating=True, enable_self_collisions=False, parse_visuals=False, parse_sites=False)
        set_contact_and_limits(builder, config)
        labels = [label.split("/")[-1] for label in builder.joint_label[1:]]
        # a D6 joint's label joins its hinges' names with "_": the joined labels spell HINGES in order
        if "_".join(labels) != "_".join(HINGES) or builder.joint_dof_count != 6 + len(HINGES):
            raise RuntimeError(f"nv_humanoid.xml's joints changed: {labels}")

    return build


class NewtonHumanoid(mb.DiffEnv):
    """DiffRL's humanoid on Newton (module docstring)."""

    diverged_magnitude = 1e4
    """Observations are metres, m/s, rad, rad/s (×0.1 for hinge rates), projections and actions."""

    def __init__(self, config: NewtonHumanoidConfig, ctx: mb.BuildContext | None = None):
        ctx = ctx or mb.BuildContext.cpu()
        self.config = c = config
        self.device, self.dtype = torch.device(ctx.device), ctx.dtype
        self.num_envs, self.episode_length = c.num_envs, c.episode_length
        self.sim = NewtonSimulator(build_humanoid(c), dt=c.dt, substeps=c.substeps, contacts=True, ground=True,
                                   device=self.device, ground_config=ground_material(c))
        self.nq, self.nd = self.sim.nq, self.sim.nd  # 28, 27
        self.action_dim = self.nd - 6
        self.state_dim = self.nq + self.nd + self.action_dim
        self.obs_dim = 76
        self.strengths = torch.tensor([strength_of(h) for h in HINGES], device=self.device)

    def split(self, state):
        """``q [N, 28]``, ``qd [N, 27]``, previous action ``[N, 21]`` (views)."""
        return state[:, :self.nq], state[:, self.nq:self.nq + self.nd], state[:, self.nq + self.nd:]

    def joint_forces(self, action):
        """``[N, 27]`` float32 generalized forces: none on the free root, ``0.35 · strength · a`` on the hinges."""
        torque = self.config.action_strength * self.strengths * action.float()
        return torch.cat([torch.zeros(action.shape[0], 6, device=action.device), torque], 1)

    def reset(self, n, generator=None):
        c, s = self.config, self.config.reset_noise
        like = dict(device=self.device, dtype=torch.float64)
        u = lambda *shape: 2 * torch.rand(*shape, generator=generator, **like) - 1  # noqa: E731
        q = torch.zeros(n, self.nq, **like)
        q[:, 2] = c.start_height
        q[:, :3] += s * u(n, 3)
        angle = (math.pi / 24) * (s / 0.1) * u(n)
        axis = torch.nn.functional.normalize(u(n, 3), dim=-1)
        q[:, 3:6] = axis * torch.sin(angle / 2)[:, None]
        q[:, 6] = torch.cos(angle / 2)
        q[:, 7:] += 2 * s * u(n, self.nq - 7)
        qd = 2.5 * s * u(n, self.nd)
        return torch.cat([q, qd, torch.zeros(n, self.action_dim, **like)], 1).to(self.dtype)

    def step(self, state, action, generator=None):
        q, qd, _ = self.split(state)
        action = action.to(state.dtype).clamp(-1.0, 1.0)
        q_next, qd_next = self.sim.step(q.float().contiguous(), qd.float().contiguous(), self.joint_forces(action))
        return torch.cat([q_next.to(state.dtype), qd_next.to(state.dtype), action], 1)

    @staticmethod
    def _projections(q):
        """The z component of the torso's z axis (up) and its x axis dotted with the horizontal direction to the
        target (heading), from ``q [N, 28]``."""
        x, y, z, w = q[:, 3:7].unbind(-1)
        up = 1 - 2 * (x * x + y * y)
        axis_x = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y + w * z)], -1)  # its horizontal components
        to_target = torch.stack([TARGET_AHEAD - q[:, 0], -q[:, 1]], -1)
        heading = (axis_x * torch.nn.functional.normalize(to_target, dim=-1)).sum(-1)
        return up, heading

    def observe(self, state):
        q, qd, previous = self.split(state)
        up, heading = self._projections(q)
        return torch.cat([q[:, 2:3], q[:, 3:7], qd[:, :3], qd[:, 3:6], q[:, 7:],
                          self.config.joint_velocity_scale * qd[:, 6:], up[:, None], heading[:, None], previous], 1)

    def reward(self, state, action, next_state):
        c = self.config
        q, qd, _ = self.split(next_state)
        up, heading = self._projections(q)
        height = (q[:, 2] - (c.termination_height + c.termination_tolerance)).clamp(-1.0, c.termination_tolerance)
        height_reward = torch.where(height < 0, -c.height_penalty * height * height, c.height_reward_scale * height)
        return (qd[:, 0] + c.up_weight * up + c.heading_weight * heading + height_reward
                - c.action_penalty * action.to(next_state.dtype).clamp(-1.0, 1.0).pow(2).sum(-1))

    def terminated(self, state):
        return state[:, 2] < self.config.termination_height

    @torch.no_grad()
    def contact_stiffness(self, state, action, next_state):
        """AHAC's ``‖F_contact / max(|a|, 1 m/s²)‖`` (kg) per transition, the step recomputed: see
        :meth:`mbmix_newton.bridge.NewtonSimulator.contact_stiffness`."""
        q, qd, _ = self.split(state)
        joint_f = self.joint_forces(action.to(state.dtype).clamp(-1.0, 1.0))
        return self.sim.contact_stiffness(q.float().contiguous(), qd.float().contiguous(), joint_f).to(state.dtype)
