"""What the ant and the humanoid share: a torso free in space (a 7-coordinate, 6-dof root joint) over hinged
limbs, a state that carries the previous action, and DiffRL's up/heading projections.

Why one place: both envs step, split their state and measure AHAC's contact signal in exactly the same way
(only the model, the joint forces and the task differ), and the quaternion projections feed both rewards; a
fix to any of them must reach both.
"""
from __future__ import annotations

import torch

import mbmix_fw as mb


def up_and_heading(quat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The z component of the body z axis (up) and the x component of the body x axis (heading) of
    quaternions ``[N, 4]`` (xyzw): DiffRL's ``up_vec`` and ``heading_vec`` projections."""
    x, y, z, w = quat.unbind(-1)
    return 1 - 2 * (x * x + y * y), 1 - 2 * (y * y + z * z)


class FloatingBaseRobot(mb.DiffEnv):
    """A Newton robot whose state is ``[q (nq), qd (nd), previous action (action_dim)]``.

    A subclass sets ``sim`` (a :class:`mbmix_newton.bridge.NewtonSimulator`), ``nq``, ``nd`` and
    ``action_dim``, and defines ``joint_forces(action) -> [N, nd]`` float32 generalized forces.
    """

    def split(self, state):
        """``q [N, nq]``, ``qd [N, nd]``, previous action ``[N, action_dim]`` (views)."""
        return state[:, :self.nq], state[:, self.nq:self.nq + self.nd], state[:, self.nq + self.nd:]

    def step(self, state, action, generator=None):
        q, qd, _ = self.split(state)
        action = action.to(state.dtype).clamp(-1.0, 1.0)
        q_next, qd_next = self.sim.step(q.float().contiguous(), qd.float().contiguous(), self.joint_forces(action))
        return torch.cat([q_next.to(state.dtype), qd_next.to(state.dtype), action], 1)

    @torch.no_grad()
    def contact_stiffness(self, state, action, next_state):
        """AHAC's ``‖F_contact / max(|a|, 1 m/s²)‖`` (kg) per transition, the step recomputed: see
        :meth:`mbmix_newton.bridge.NewtonSimulator.contact_stiffness` (a robot resting on its legs scores
        about its weight in newtons, one in the air 0)."""
        q, qd, _ = self.split(state)
        joint_f = self.joint_forces(action.to(state.dtype).clamp(-1.0, 1.0))
        return self.sim.contact_stiffness(q.float().contiguous(), qd.float().contiguous(), joint_f).to(state.dtype)
