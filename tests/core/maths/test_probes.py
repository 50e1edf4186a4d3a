"""Jacobian probes: the estimator's scaling, exact VJPs against known Jacobians, detachment, fallbacks."""
from __future__ import annotations

import math

import pytest
import torch

import mbmix_fw as mb
from mbmix_fw.testing import LinearEnv


class Pendulum64:
    """A small nonlinear dynamics (float64) with an analytic Jacobian, independent of any plugin."""

    dt, c = 0.05, 15.0

    def step(self, state, action, generator=None):
        speed = state[:, 1] + (self.c * torch.sin(state[:, 0]) + 3.0 * action[:, 0]) * self.dt
        return torch.stack([state[:, 0] + speed * self.dt, speed], -1)

    def jacobians(self, state):
        n = state.shape[0]
        dspeed_dtheta = self.c * torch.cos(state[:, 0]) * self.dt
        j_s = torch.zeros(n, 2, 2, dtype=state.dtype)
        j_s[:, 1, 0], j_s[:, 1, 1] = dspeed_dtheta, 1.0
        j_s[:, 0, 0], j_s[:, 0, 1] = 1.0 + dspeed_dtheta * self.dt, self.dt
        j_a = torch.zeros(n, 2, 1, dtype=state.dtype)
        j_a[:, 1, 0], j_a[:, 0, 0] = 3.0 * self.dt, 3.0 * self.dt**2
        return j_s, j_a


class NumpyBackward(torch.autograd.Function):
    """``y = A x`` whose backward leaves torch (like a JAX/Warp bridge), so it cannot be vmapped."""

    @staticmethod
    def forward(ctx, x, matrix):
        ctx.save_for_backward(matrix)
        return x @ matrix.T

    @staticmethod
    def backward(ctx, grad):
        (matrix,) = ctx.saved_tensors
        return torch.from_numpy(grad.detach().numpy() @ matrix.numpy()), None


class BridgeEnv:
    def __init__(self, env: LinearEnv):
        self.env = env

    def step(self, state, action, generator=None):
        return NumpyBackward.apply(state, self.env.A) + action @ self.env.B.T


def linear_env64(state_dim=4, action_dim=2):
    env = LinearEnv(state_dim, action_dim, seed=3)
    env.A, env.B = env.A.double(), env.B.double()
    return env


def test_random_unit_vectors_are_unit_and_reproducible():
    u = mb.random_unit_vectors(10, 3, 5, torch.Generator().manual_seed(1))
    assert u.shape == (10, 3, 5)
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(10, 3))
    torch.testing.assert_close(u, mb.random_unit_vectors(10, 3, 5, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("dim", [1, 3, 7])
def test_probe_estimator_is_unbiased_for_squared_frobenius_norm(dim):
    """S · E_u‖uᵀM‖² = ‖M‖²_F for u uniform on the unit sphere of R^S (the factor the model relies on)."""
    g = torch.Generator().manual_seed(dim)
    m = torch.randn(dim, 4, generator=g, dtype=torch.float64)
    u = mb.random_unit_vectors(200_000, 1, dim, g, dtype=torch.float64)[:, 0]
    samples = dim * (u @ m).pow(2).sum(-1)
    stderr = samples.std() / math.sqrt(samples.numel())
    assert abs(samples.mean() - m.pow(2).sum()) < 5 * stderr + 1e-12
    # E[u uᵀ] = I / S, the identity behind it
    second_moment = (u.T @ u) / u.shape[0]
    torch.testing.assert_close(second_moment, torch.eye(dim, dtype=torch.float64) / dim, atol=5e-3, rtol=0)


@pytest.mark.parametrize("probes", [1, 5])
def test_probes_are_exact_vjps_of_a_linear_env(probes):
    env = linear_env64()
    g = torch.Generator().manual_seed(0)
    state, action = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    batch = mb.collect_transitions(env, state, action, probes, g)
    assert batch.probe_u.shape == (6, probes, 4) and batch.probe_a.shape == (6, probes, 2)
    torch.testing.assert_close(batch.probe_u.norm(dim=-1), torch.ones(6, probes, dtype=torch.float64))
    torch.testing.assert_close(batch.probe_s, batch.probe_u @ env.A)
    torch.testing.assert_close(batch.probe_a, batch.probe_u @ env.B)
    torch.testing.assert_close(batch.next_state, env.step(state, action))


def test_probes_of_a_nonlinear_step_match_analytic_jacobians():
    dyn = Pendulum64()
    state = torch.randn(9, 2, dtype=torch.float64) * 2
    action = torch.rand(9, 1, dtype=torch.float64) * 2 - 1
    j_s, j_a = dyn.jacobians(state)
    batch = mb.collect_transitions(dyn, state, action, 3, torch.Generator().manual_seed(2))
    torch.testing.assert_close(batch.probe_s, batch.probe_u @ j_s)
    torch.testing.assert_close(batch.probe_a, batch.probe_u @ j_a)
    full = mb.collect_jacobians(dyn, state, action)
    torch.testing.assert_close(full.probe_u, torch.eye(2, dtype=torch.float64).expand(9, 2, 2))
    torch.testing.assert_close(full.probe_s, j_s)
    torch.testing.assert_close(full.probe_a, j_a)


def test_probes_are_partial_derivatives_and_detached():
    """An action computed from the state (a policy) must not leak into ∂s'/∂s."""
    env = linear_env64()
    state = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    action = torch.tanh(state @ weights.T)
    batch = mb.collect_transitions(env, state, action, 2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(batch.probe_s, batch.probe_u @ env.A)
    for tensor in (batch.state, batch.action, batch.next_state, batch.probe_u, batch.probe_s, batch.probe_a):
        assert not tensor.requires_grad


def test_zero_probes_stores_states_only_and_the_given_next_state():
    env = linear_env64()
    state, action = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    noisy = env.step(state, action) + 0.1
    batch = mb.collect_transitions(env, state, action, 0, next_state=noisy)
    assert batch.probe_u is None and batch.probe_s is None and batch.probe_a is None
    torch.testing.assert_close(batch.next_state, noisy)
    with_probes = mb.collect_transitions(env, state, action, 2, torch.Generator(), next_state=noisy)
    torch.testing.assert_close(with_probes.next_state, noisy)  # real next state kept, probes noise-free


def test_unvmappable_backward_falls_back_to_the_loop():
    env = linear_env64()
    bridge = BridgeEnv(env)
    state, action = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    batch = mb.collect_transitions(bridge, state, action, 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(batch.probe_s, batch.probe_u @ env.A)
    torch.testing.assert_close(batch.probe_a, batch.probe_u @ env.B)


def test_eval_transitions_take_full_jacobians_on_small_envs_only():
    env = linear_env64()
    state, action = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    small = mb.collect_eval_transitions(env, state, action, torch.Generator())
    assert small.probe_u.shape == (5, 4, 4)
    torch.testing.assert_close(small.probe_s, env.A.expand(5, 4, 4))
    large = mb.collect_eval_transitions(env, state, action, torch.Generator(), probes=3, full_max_dim=5)
    assert large.probe_u.shape == (5, 3, 4)


def test_negative_probes_is_an_error():
    with pytest.raises(ValueError, match="probes"):
        mb.collect_transitions(linear_env64(), torch.zeros(1, 4), torch.zeros(1, 2), -1)


class OutOfMemoryBackward(torch.autograd.Function):
    """Identity whose backward runs out of memory (as a large batched backward on a GPU can)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")


class OutOfMemoryEnv:
    def step(self, state, action, generator=None):
        return OutOfMemoryBackward.apply(state) + action.sum(-1, keepdim=True)


def test_out_of_memory_in_the_batched_backward_propagates_and_is_not_remembered():
    from mbmix_fw.maths import probes

    state, action = torch.randn(5, 3), torch.randn(5, 2)
    with pytest.raises(torch.OutOfMemoryError):
        mb.collect_transitions(OutOfMemoryEnv(), state, action, 3, torch.Generator().manual_seed(0))
    assert OutOfMemoryEnv not in probes._UNBATCHABLE  # no permanent switch to the slow loop
