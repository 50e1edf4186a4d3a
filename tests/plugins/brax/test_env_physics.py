"""The ``brax`` env's physics, on the pendulums of every supported backend and the ant: window gradients against
float64 finite differences (through ground contact on the ant), Brax's termination, long rollouts, and the
contact signals AHAC and the model study read.

Kept apart from ``test_env.py`` (the reacher and the bridge) so the two heaviest groups of Brax compilations
run on different workers of the test command (``-n 2 --dist loadfile``); each file shares its module-scoped
envs at one batch size (``N = 2``), and the persistent compilation cache lets later runs load them.
"""
from __future__ import annotations

import pytest
import torch

import mbmix_fw as mb

pytestmark = pytest.mark.timeout(3600)  # compiling Brax takes minutes per function on a loaded CPU

pytest.importorskip("jax")  # never skipped in CI: the test extra installs jax and brax
from mbmix_brax import BRAX_BACKENDS, BraxConfig  # noqa: E402
from mbmix_brax.bridge import jax, to_jax, to_torch  # noqa: E402
from mbmix_brax.env import BraxEnv  # noqa: E402

jnp = jax.numpy
N = 2


def make_env(name, backend="generalized", float64=True, episode_length=50):
    return BraxEnv(BraxConfig(name=name, backend=backend, num_envs=N, float64=float64,
                              episode_length=episode_length))


def as_torch(array):
    return to_torch(array).double()


@pytest.fixture(scope="module")
def ant():
    return make_env("ant")


@pytest.fixture(scope="module")
def pendulums():
    return {backend: make_env("inverted_pendulum", backend) for backend in BRAX_BACKENDS}


@pytest.mark.slow  # compiles Brax (minutes on a 2-core CPU without the JAX cache)
def test_terminated_is_brax_done_of_the_reached_state(pendulums):
    env = pendulums["generalized"]
    upright = env.reset(N, torch.Generator().manual_seed(0)).double()
    fallen = upright.clone()
    fallen[:, 1] = torch.tensor([0.5, -0.5], dtype=torch.float64)  # pole angle beyond Brax's 0.2 rad
    assert not env.terminated(upright).any() and env.terminated(fallen).all()
    out = env.transition(fallen, torch.zeros(N, 1, dtype=torch.float64))
    assert out.terminated.all() and env.score(upright, torch.zeros(N, 1, dtype=torch.float64), fallen).terminated.all()


def window_objective(env, x0, opens, weights, state_weights=None):
    """Sum of rewards and weighted observations of a short closed-loop window through ``transition``,
    plus weighted final states (``state_weights``, default: the first columns of ``weights``)."""
    x, total = x0, 0.0
    for a_open in opens:
        obs = env.observe(x)
        action = torch.tanh(a_open + 0.5 * obs[:, :1])
        out = env.transition(x, action)
        total = total + out.reward.sum() + (out.next_obs * weights).sum()
        x = out.next_state
    state_weights = weights[:, : x.shape[1]] if state_weights is None else state_weights
    return total + (x * state_weights).sum()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BRAX_BACKENDS)
def test_window_gradient_matches_float64_finite_differences(pendulums, backend):
    env = pendulums[backend]
    g = torch.Generator().manual_seed(1)
    x0 = env.reset(N, g).double()
    opens = 0.5 * torch.randn(3, N, env.action_dim, generator=g, dtype=torch.float64)
    weights = torch.randn(N, env.obs_dim, generator=g, dtype=torch.float64)
    dx, dopen = torch.randn(x0.shape, generator=g, dtype=torch.float64), torch.randn(opens.shape, generator=g, dtype=torch.float64)
    x_leaf, open_leaf = x0.clone().requires_grad_(True), opens.clone().requires_grad_(True)
    grad_x, grad_open = torch.autograd.grad(window_objective(env, x_leaf, open_leaf, weights), (x_leaf, open_leaf))
    analytic = (grad_x * dx).sum() + (grad_open * dopen).sum()
    eps = 1e-6
    with torch.no_grad():
        plus = window_objective(env, x0 + eps * dx, opens + eps * dopen, weights)
        minus = window_objective(env, x0 - eps * dx, opens - eps * dopen, weights)
    numeric = (plus - minus) / (2 * eps)
    assert grad_open.abs().sum() > 0
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_ant_window_gradient_through_contacts_matches_float64_finite_differences(ant):
    """Ant's legs touch the ground from the first step: the gradient runs through contact forces."""
    env = ant
    g = torch.Generator().manual_seed(3)
    x0 = env.reset(N, g).double()
    from brax import contact

    with jax.enable_x64(True):
        q, qd = to_jax(x0[:, :env.q_size].contiguous()), to_jax(x0[:, env.q_size:].contiguous())
        distances = jax.jit(jax.vmap(lambda q, qd: contact.get(env.brax_env.sys, env.brax_env.pipeline_init(q, qd).x)
                                     .dist))(q, qd)
    assert (as_torch(distances) < 0).any(dim=-1).all()  # a foot of each ant is in contact at the start
    opens = 0.5 * torch.randn(2, N, env.action_dim, generator=g, dtype=torch.float64)
    weights = torch.randn(N, env.obs_dim, generator=g, dtype=torch.float64)
    state_weights = torch.randn(N, env.state_dim, generator=g, dtype=torch.float64)
    dx, dopen = torch.randn(x0.shape, generator=g, dtype=torch.float64), torch.randn(opens.shape, generator=g, dtype=torch.float64)
    x_leaf, open_leaf = x0.clone().requires_grad_(True), opens.clone().requires_grad_(True)
    grad_x, grad_open = torch.autograd.grad(window_objective(env, x_leaf, open_leaf, weights, state_weights), (x_leaf, open_leaf))
    analytic = (grad_x * dx).sum() + (grad_open * dopen).sum()
    eps = 1e-6
    with torch.no_grad():
        plus = window_objective(env, x0 + eps * dx, opens + eps * dopen, weights, state_weights)
        minus = window_objective(env, x0 - eps * dx, opens - eps * dopen, weights, state_weights)
    numeric = (plus - minus) / (2 * eps)
    assert grad_open.abs().sum() > 0
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # compiles Brax (minutes on a 2-core CPU without the JAX cache)
def test_a_long_random_rollout_stays_finite_and_resets(pendulums):
    env = pendulums["generalized"]
    g = torch.Generator().manual_seed(2)

    def random_policy(obs, generator):
        return torch.rand(obs.shape[0], env.action_dim, generator=g, dtype=obs.dtype) * 2 - 1

    # one step before the time limit: the first step truncates; random actions then topple the pole often
    start = mb.Cursor(env.reset(N, g).double(), torch.full((N,), env.episode_length - 1, dtype=torch.long))
    with torch.no_grad():
        out = mb.rollout(random_policy, env, env, start, steps=400, generator=g)
    assert torch.isfinite(out.states).all() and torch.isfinite(out.rewards).all() and torch.isfinite(out.next_obs).all()
    assert out.terminated.sum() >= 10 and out.truncated[0].all()


# ---------------------------------------------------------------- contact signal (AHAC)
def test_contact_stiffness_is_the_constraint_force_over_acceleration(ant):
    """Against Brax's own pipeline step; on the ground the ant's legs carry it (> 0), lifted 2 m there
    is nothing to touch (and no joint at a limit)."""
    state = ant.reset(N, torch.Generator().manual_seed(0))
    still = torch.zeros(N, ant.action_dim, dtype=state.dtype)
    for _ in range(20):  # settle onto the ground
        state = ant.step(state, still)
    ours = ant.contact_stiffness(state, still, None)
    with jax.enable_x64(True):
        x = to_jax(state.double())
        reached = jax.jit(jax.vmap(lambda row, a: ant.brax_env.pipeline_step(
            ant.brax_env.pipeline_init(row[:ant.q_size], row[ant.q_size:]), a)))(x, to_jax(still.double()))
        expected = jnp.linalg.norm(reached.qf_constraint / jnp.maximum(jnp.abs(reached.qdd), 1.0), axis=-1)
    torch.testing.assert_close(ours, to_torch(expected).to(ours.dtype), rtol=1e-10, atol=1e-10)
    assert (ours > 1.0).all()
    lifted = state.clone()
    lifted[:, 2] += 2.0  # the torso's height (free joint: x, y, z, quaternion, …)
    assert (ant.contact_stiffness(lifted, still, None) < 1e-6 * ours).all()
    assert mb.reports_contact(ant)


def test_contact_events_count_the_penetrating_points_of_every_substep(ant):
    """A settled ant rests on its feet through the whole step: every substep sees the contacts of the start
    state (counted here with Brax's own collision, once, times the substeps); lifted 2 m it touches nothing."""
    from brax import contact

    state = ant.reset(N, torch.Generator().manual_seed(0))
    still = torch.zeros(N, ant.action_dim, dtype=state.dtype)
    for _ in range(20):  # settle onto the ground
        state = ant.step(state, still)
    with jax.enable_x64(True):
        x = to_jax(state.double())
        at_start = as_torch(jax.jit(jax.vmap(lambda row: jnp.sum(contact.get(ant.brax_env.sys, ant.brax_env.pipeline_init(
            row[:ant.q_size], row[ant.q_size:]).x).dist < 0)))(x))
    substeps = round(float(ant.brax_env.dt) / float(ant.brax_env.sys.opt.timestep))
    assert substeps > 1 and (at_start > 0).all()
    torch.testing.assert_close(ant.contact_events(state, still), substeps * at_start.to(state.dtype))
    lifted = state.clone()
    lifted[:, 2] += 2.0
    assert (ant.contact_events(lifted, still) == 0).all()


def test_only_the_generalized_pipeline_reports_contact(pendulums):
    assert {backend: mb.reports_contact(env) for backend, env in pendulums.items()} == \
        {backend: backend == "generalized" for backend in pendulums}
