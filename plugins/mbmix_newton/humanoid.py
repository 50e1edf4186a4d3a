"""``newton_humanoid``: Newton's ``nv_humanoid.xml`` on Featherstone with ground contact; DiffRL's humanoid task.

**Model.** Newton's own asset ``nv_humanoid.xml`` (Apache-2.0, ``newton.examples.get_asset``): 13 capsule and
sphere bodies, 40.8 kg; a free root and 21 hinges, which Newton merges per body into D6 joints (abdomen z+y,
the hips x+z+y, the ankles y+x, the shoulders) and revolute joints (abdomen x, knees, elbows): 28 coordinates,
27 dofs. The feet are two flat capsules each. The asset's own armature, joint damping and joint springs (its
``stiffness``, a spring to the zero pose: DiffRL loaded its asset's stiffness and armature too) are kept. Changes,
each DiffRL's humanoid constant unless marked (:class:`~mbmix_newton.configs.NewtonHumanoidConfig`): contact ke
2e4, kd 1e3 (**ours**: DiffRL's 5e3 is past explicit stability on these 1.1 kg feet, measured), kf 1e3, μ 0.75
on every shape and the ground; joint-limit ke 1e3, kd 10; 48 substeps per 1/60 s step. Self collisions off.

**Actuation.** ``a ∈ [-1, 1]^21`` in the asset's dof order (:data:`HINGES`): torque ``action_strength · gear_i ·
a_i`` with DiffRL's humanoid motor strengths over 200 as gears (:data:`GEARS`; its 0.35 scale is in
``action_strength`` = 70). The asset's ``<motor gear>`` values are not used.

**State** ``[N, 28 + 27 + 21]`` = ``(joint_q, joint_qd, previous action)``: torso position (3), quaternion (4,
xyzw), hinge angles (21); torso linear and angular velocity (world frame, Newton's free joint), hinge rates (21);
the previous action (DiffRL's observation holds it).

**Observation** ``[N, 76]`` (DiffRL's humanoid, z-up instead of its y-up): torso height (1), quaternion (4),
linear velocity (3), angular velocity (3), hinge angles (21), ``joint_velocity_scale`` × hinge rates (21), up
projection (1: z component of the torso's z axis), heading projection (1: x component of the torso's x axis,
the target direction being +x), previous action (21).

**Reward** (DiffRL's humanoid, of the reached state): ``v_x + 0.1·up + heading + r_h − 0.002·|a|²`` with
``Δh = clip(z − (0.74 + 0.1), −1, 0.1)``, ``r_h = 10·Δh`` above zero and ``−200·Δh²`` below.
**Termination**: torso height below 0.74 m.

**Reset** (DiffRL's stochastic init): the torso at ``start_height`` (1.35 m) upright, all hinges at 0 (the
asset's pose), plus ``U(-1, 1)·0.1`` m on the position, a turn of ``U(-1, 1)·π/24`` about a random axis,
``U(-1, 1)·0.2`` rad on each hinge and ``U(-1, 1)·0.25`` on every velocity.

**Gradients** (tested against central differences, one step with the feet on the ground: 1e-2 relative).
Contacts are detected once per step, off the tape (:meth:`mbmix_newton.bridge._Workspace.run`), although the
flat feet's contact set depends on the pose: measured, finite differences with the detection held at the
unperturbed pose agree with re-detected ones to 0.2 % or better (mid-fall, both 4 to 7 % off the tape there
for the reason that follows), so the tape loses nothing by it. Where a finite
difference straddles a contact starting or a joint reaching its limit within the step, it disagrees with the
tape by O(1) -- the step jumps there (the contact and limit damping switch on) -- and that is most states of a
humanoid falling; the tape is the step's derivative between those jumps (benchmarks/RESULTS.md, "Newton
humanoid"; the diagnosis: ``benchmarks/newton_humanoid_gradient.py``). With DiffRL's contact damping 5e3, or
with 16 substeps, the feet chatter between sticking and slipping within the step and the step is not smooth at
any usable finite-difference scale (0.5 to 1.8 relative, measured): hence 48 substeps and damping 1e3.

Where we differ from DiffRL: ``nv_humanoid.xml`` instead of DiffRL's humanoid asset, the contact damping
above, Newton's Featherstone and contact model instead of dflex's, z-up.
"""
from __future__ import annotations

import torch

import mbmix_fw as mb

from .ant import ground_material, set_contact_and_limits
from .bridge import NewtonSimulator
from .configs import NewtonHumanoidConfig
from .floating_base import FloatingBaseRobot, up_and_heading

HINGES = ("abdomen_z", "abdomen_y", "abdomen_x",
          "right_hip_x", "right_hip_z", "right_hip_y", "right_knee", "right_ankle_y", "right_ankle_x",
          "left_hip_x", "left_hip_z", "left_hip_y", "left_knee", "left_ankle_y", "left_ankle_x",
          "right_shoulder1", "right_shoulder2", "right_elbow", "left_shoulder1", "left_shoulder2", "left_elbow")
"""The asset's hinge order, which is Newton's dof order after the root's 6 (checked at build)."""
GEARS = (1.0, 1.0, 1.0,
         1.0, 1.0, 3.0, 2.0, 0.5, 0.5,
         1.0, 1.0, 3.0, 2.0, 0.5, 0.5,
         0.5, 0.5, 1.0, 0.5, 0.5, 1.0)
"""DiffRL's humanoid motor strengths over 200, in :data:`HINGES` order: abdomen 200 N·m, hips 200 (x, z) and
600 (y, the pitch), knees 400, ankles 100, shoulders 100, elbows 200 (before its 0.35 scale)."""
ROOT_Q, ROOT_DOFS = 7, 6


def build_humanoid(config: NewtonHumanoidConfig):
    import newton.examples

    with open(newton.examples.get_asset("nv_humanoid.xml")) as handle:
        xml = handle.read()

    def build(builder) -> None:
        builder.add_mjcf(xml, floating=True, enable_self_collisions=False, parse_visuals=False)
        set_contact_and_limits(builder, config)
        names = "_".join(label.split("/")[-1] for label in builder.joint_label[1:])
        if names != "_".join(HINGES) or builder.joint_dof_count != ROOT_DOFS + len(HINGES):
            raise RuntimeError(f"nv_humanoid.xml's joints changed: {builder.joint_label}")

    return build


class NewtonHumanoid(FloatingBaseRobot):
    """DiffRL's humanoid on Newton (module docstring)."""

    diverged_magnitude = 1e4
    """Observations are metres, m/s, rad, rad/s (scaled), projections and actions: a healthy humanoid stays
    within tens."""

    def __init__(self, config: NewtonHumanoidConfig, ctx: mb.BuildContext | None = None):
        ctx = ctx or mb.BuildContext.cpu()
        self.config = c = config
        self.device, self.dtype = torch.device(ctx.device), ctx.dtype
        self.num_envs, self.episode_length = c.num_envs, c.episode_length
        self.sim = NewtonSimulator(build_humanoid(c), dt=c.dt, substeps=c.substeps, contacts=True, ground=True,
                                   device=self.device, ground_config=ground_material(c))
        self.nq, self.nd = self.sim.nq, self.sim.nd  # 28, 27
        self.action_dim = self.nd - ROOT_DOFS
        self.state_dim = self.nq + self.nd + self.action_dim
        self.obs_dim = 76
        start = self.sim.initial_q()[0].to(self.device, torch.float64)
        start[2] = c.start_height
        self.start_q = start
        self.gears = torch.tensor(GEARS, device=self.device)

    def reset(self, n, generator=None):
        c = self.config
        like = dict(device=self.device, dtype=torch.float64)
        u = lambda *shape: 2 * torch.rand(*shape, generator=generator, **like) - 1  # noqa: E731
        q = self.start_q.expand(n, -1).clone()
        q[:, :3] += c.reset_noise * u(n, 3)
        axis = torch.nn.functional.normalize(u(n, 3), dim=-1)
        half = c.reset_tilt * u(n) / 2
        q[:, 3:7] = torch.cat([axis * torch.sin(half)[:, None], torch.cos(half)[:, None]], 1)  # start is upright
        q[:, ROOT_Q:] += c.reset_angle_noise * u(n, self.nq - ROOT_Q)
        qd = c.reset_velocity_noise * u(n, self.nd)
        return torch.cat([q, qd, torch.zeros(n, self.action_dim, **like)], 1).to(self.dtype)

    def joint_forces(self, action):
        """``[N, 27]`` float32 generalized forces: none on the free root, ``action_strength · gear · a`` on the
        hinges."""
        torque = self.config.action_strength * self.gears * action.float()
        return torch.cat([torch.zeros(action.shape[0], ROOT_DOFS, device=action.device), torque], 1)

    def observe(self, state):
        q, qd, previous = self.split(state)
        up, heading = up_and_heading(q[:, 3:7])
        return torch.cat([q[:, 2:3], q[:, 3:7], qd[:, :3], qd[:, 3:6], q[:, ROOT_Q:],
                          self.config.joint_velocity_scale * qd[:, ROOT_DOFS:], up[:, None], heading[:, None],
                          previous], 1)

    def reward(self, state, action, next_state):
        c = self.config
        q, qd, _ = self.split(next_state)
        up, heading = up_and_heading(q[:, 3:7])
        tolerance = c.termination_height_tolerance
        height = (q[:, 2] - (c.termination_height + tolerance)).clamp(-1.0, tolerance)
        height_reward = torch.where(height < 0, -c.height_penalty * height * height, c.height_reward_scale * height)
        return (qd[:, 0] + c.up_weight * up + c.heading_weight * heading + height_reward
                - c.action_penalty * action.to(next_state.dtype).clamp(-1.0, 1.0).pow(2).sum(-1))

    def terminated(self, state):
        return state[:, 2] < self.config.termination_height

