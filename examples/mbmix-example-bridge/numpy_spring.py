"""Bridge a simulator mbmix-fw does not ship: a NumPy chain of masses and springs with a hand-written adjoint."""
import numpy as np
import torch

import mbmix_fw as mb

K, K3, DT = 10.0, 50.0, 0.05  # linear and cubic spring stiffness (unit masses), time step (s)


def spring_step(x, v, f):
    """One semi-implicit Euler step of chains ``[N, M]`` (free ends); ``f [N, M]`` external forces."""
    s = np.diff(x, axis=-1)                       # stretch of each spring, [N, M-1]
    tension = K * s + K3 * s**3
    force = f.copy()
    force[..., :-1] += tension
    force[..., 1:] -= tension
    v_next = v + DT * force
    return x + DT * v_next, v_next


def spring_vjp(x, v, f, gx, gv):
    """``(gx, gv)`` pulled back through ``spring_step`` at ``(x, v, f)``. Leading axes of the cotangents
    broadcast, so ``[P, N, M]`` cotangents (P probes) are answered in one call."""
    gv_in = gv + DT * gx                          # x' = x + DT·v'
    g_force = DT * gv_in                          # v' = v + DT·force
    s = np.diff(x, axis=-1)
    g_s = (K + 3 * K3 * s**2) * (g_force[..., :-1] - g_force[..., 1:])
    gx_in = gx.copy()
    gx_in[..., 1:] += g_s
    gx_in[..., :-1] -= g_s
    return gx_in, gv_in, g_force


def _numpy(tensors):
    """Zero-copy NumPy views of CPU tensors (a CUDA tensor is copied to the host: NumPy computes there)."""
    return [mb.to_foreign(t.cpu(), np.from_dlpack) for t in tensors]


def _torch(arrays, device):
    """Back to torch on the inputs' device, as the bridge requires (no copy on the CPU)."""
    return tuple(mb.from_foreign(a).to(device) for a in arrays)


def _forward(inputs):
    return _torch(spring_step(*_numpy(inputs)), inputs[0].device)


def _vjp(inputs, cotangents):
    return _torch(spring_vjp(*_numpy(inputs), *_numpy(cotangents)), inputs[0].device)


spring = mb.ExternalFunction(
    forward=_forward,
    vjp=_vjp,            # recompute backward: gets the inputs back, with one cotangent per output
    batched_vjp=_vjp,    # P probes -> one call (spring_vjp broadcasts over the probe axis)
    name="numpy spring chain", outputs=("x", "v"),
    output_shapes=lambda inputs: (inputs[0].shape, inputs[0].shape))


class SpringChain:
    """Dynamics for mbmix-fw: ``state [N, 2M] = (positions, velocities)``, ``action [N, M]`` forces."""

    def step(self, state, action, generator=None):
        x, v = state.chunk(2, dim=-1)
        return torch.cat(spring(x, v, action.to(state.dtype)), dim=-1)


class SpringChainEnv(mb.DiffEnv):
    """The chain as an env: bring every mass to rest at 0 with little force.

    It follows the run's device and dtype like any env: ``ctx`` (the run's ``BuildContext``) carries
    ``run.device`` (``"auto"`` resolved) and ``run.dtype`` (float32 for ``"auto"``), its states are made
    there, and the trainer runs the policy in the states' dtype, so NumPy computes in it too. On a CUDA
    device each step copies its tensors to the host and back (``_numpy``/``_torch``): correct, but a GPU
    buys nothing for a NumPy simulator, so its recipes say ``device = "cpu"``."""

    def __init__(self, masses: int = 4, num_envs: int = 16, episode_length: int = 100,
                 ctx: mb.BuildContext | None = None):
        ctx = ctx or mb.BuildContext.cpu()
        self.num_envs, self.episode_length = num_envs, episode_length
        self.state_dim, self.obs_dim, self.action_dim = 2 * masses, 2 * masses, masses
        self.device, self.dtype = ctx.device, ctx.dtype
        self.chain = SpringChain()

    def reset(self, n, generator=None):
        u = torch.rand(n, self.state_dim, generator=generator, device=self.device, dtype=self.dtype)
        return 0.2 * (2 * u - 1)

    def step(self, state, action, generator=None):
        return self.chain.step(state, action)

    def reward(self, state, action, next_state):
        x, v = next_state.chunk(2, dim=-1)
        return -(x.pow(2).sum(-1) + 0.1 * v.pow(2).sum(-1) + 0.01 * action.pow(2).sum(-1))

    def observe(self, state):
        return state
