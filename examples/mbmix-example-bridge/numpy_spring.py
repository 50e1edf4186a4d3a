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
    return [mb.to_foreign(t, np.from_dlpack) for t in tensors]   # zero-copy views (CPU tensors)


def _vjp(inputs, cotangents):
    return tuple(mb.from_foreign(g) for g in spring_vjp(*_numpy(inputs), *_numpy(cotangents)))


spring = mb.ExternalFunction(
    forward=lambda inputs: tuple(mb.from_foreign(o) for o in spring_step(*_numpy(inputs))),
    vjp=_vjp,            # recompute backward: gets the inputs back, with one cotangent per output
    batched_vjp=_vjp,    # P probes -> one call (spring_vjp broadcasts over the probe axis)
    name="numpy spring chain", outputs=("x", "v"),
    output_shapes=lambda inputs: (inputs[0].shape, inputs[0].shape))


class SpringChain:
    """Dynamics for mbmix-fw: ``state [N, 2M] = (positions, velocities)``, ``action [N, M]`` forces."""

    def step(self, state, action, generator=None):
        x, v = state.chunk(2, dim=-1)
        return torch.cat(spring(x, v, action.to(state.dtype)), dim=-1)
