"""The adjoint tap (free Jacobian probes from the actor's backward) and the Jacobian blend."""
from __future__ import annotations

import pytest
import torch

import mbmix_fw as mb
from mbmix_fw.maths.adjoint_tap import AdjointTap
from mbmix_fw.maths.jacobian_blend import JacobianBlend
from mbmix_fw.testing import LinearEnv
from mbmix_toy import Pendulum, PendulumConfig

F64 = torch.float64


def pendulum(num_envs=6):
    return Pendulum(PendulumConfig(num_envs=num_envs), mb.BuildContext(dtype=F64))


def window_loss(env, dynamics, actions, start):
    """A differentiable objective of a 3-step window: rewards plus a terminal term, as an actor loss has."""
    state, total = start, 0.0
    for action in actions:
        next_state = dynamics.step(state, action)
        total = total + env.reward(state, action, next_state).sum()
        state = next_state
    return -(total + state.pow(2).sum())


def test_tapped_probes_are_the_steps_own_vjps_along_the_backward_cotangents():
    """Each tapped row is (û, ûᵀ∂f/∂s, ûᵀ∂f/∂a) with û the unit cotangent the backward brought to s';
    checked against an independent VJP of the untapped step in the same directions."""
    env = pendulum()
    g = torch.Generator().manual_seed(0)
    start = env.reset(env.num_envs, g)
    actions = [torch.rand(env.num_envs, 1, generator=g, dtype=F64, requires_grad=True) * 2 - 1 for _ in range(3)]
    tap = AdjointTap()
    window_loss(env, tap.wrap(env), actions, start).backward()
    probes = tap.probes()
    assert len(probes) == 3 * env.num_envs and probes.probe_u.shape == (3 * env.num_envs, 1, env.state_dim)
    torch.testing.assert_close(probes.probe_u.norm(dim=-1), torch.ones(len(probes), 1, dtype=F64))
    _, expect_s, expect_a = mb.vector_jacobian_products(env, probes.state, probes.action, probes.probe_u)
    torch.testing.assert_close(probes.probe_s, expect_s)
    torch.testing.assert_close(probes.probe_a, expect_a)
    # the direction is the real cotangent: the last step's is ∂(-r_2 - ‖s_3‖²)/∂s_3, by autograd on its own
    last = probes.state[-env.num_envs:], probes.action[-env.num_envs:]
    s3 = env.step(*last).detach().requires_grad_(True)
    cotangent = torch.autograd.grad(-(env.reward(*last, s3).sum() + s3.pow(2).sum()), s3)[0]
    torch.testing.assert_close(probes.probe_u[-env.num_envs:, 0], cotangent / cotangent.norm(dim=-1, keepdim=True))


def test_the_tap_does_not_change_the_gradient():
    env = pendulum()
    start = env.reset(env.num_envs, torch.Generator().manual_seed(1))
    base = torch.linspace(-0.9, 0.9, env.num_envs, dtype=F64).unsqueeze(-1)
    grads = []
    for dynamics in (env, AdjointTap().wrap(env)):
        actions = [(base * (k + 1) / 3).requires_grad_(True) for k in range(3)]
        window_loss(env, dynamics, actions, start).backward()
        grads.append(torch.cat([a.grad for a in actions]))
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_rows_without_a_cotangent_or_with_a_nonfinite_one_are_dropped():
    env = LinearEnv(3, 2, num_envs=4, seed=0)
    tap = AdjointTap()
    dynamics = tap.wrap(env)
    state, action = torch.randn(4, 3), torch.randn(4, 2, requires_grad=True)
    next_state = dynamics.step(state, action)
    weights = torch.tensor([[1.0], [0.0], [float("nan")], [2.0]])  # row 1 gets no cotangent, row 2 a NaN one
    (next_state * weights).sum().backward()
    probes = tap.probes()
    torch.testing.assert_close(probes.state, state[[0, 3]])
    torch.testing.assert_close(probes.probe_s[:, 0], probes.probe_u[:, 0] @ env.A)
    torch.testing.assert_close(probes.probe_a[:, 0], probes.probe_u[:, 0] @ env.B)


def test_no_probes_before_a_backward_and_none_recorded_without_grad():
    env = LinearEnv(3, 2, num_envs=4)
    tap = AdjointTap()
    with torch.no_grad():
        tap.wrap(env).step(torch.randn(4, 3), torch.randn(4, 2))
    assert tap.records == [] and tap.probes() is None
    tap.wrap(env).step(torch.randn(4, 3), torch.randn(4, 2, requires_grad=True))
    assert tap.probes() is None  # forward only: nothing reached the tap yet


@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
def test_jacobian_blend_has_the_simulators_value_and_the_blended_jacobian(w):
    simulator, model = LinearEnv(3, 2, seed=0), LinearEnv(3, 2, seed=1)
    blend = JacobianBlend(simulator, model, w)
    state = torch.randn(5, 3, dtype=F64, requires_grad=True)
    action = torch.randn(5, 2, dtype=F64, requires_grad=True)
    simulator.A, simulator.B, model.A, model.B = (m.double() for m in (simulator.A, simulator.B, model.A, model.B))
    out = blend.step(state, action)
    torch.testing.assert_close(out, simulator.step(state, action))
    u = torch.randn(5, 3, dtype=F64)
    g_s, g_a = torch.autograd.grad(out, (state, action), u)
    torch.testing.assert_close(g_s, u @ (w * model.A + (1 - w) * simulator.A))
    torch.testing.assert_close(g_a, u @ (w * model.B + (1 - w) * simulator.B))


def test_jacobian_blend_rejects_weights_outside_the_unit_interval():
    with pytest.raises(ValueError, match="model_weight"):
        JacobianBlend(LinearEnv(), LinearEnv(), 1.5)
