"""The ``brax`` env on the reacher: Brax's own reset/reward/observation, the DiffEnv contract, compilations
per shape, carried pipeline states; and the JAX bridge. The physics (gradients against float64 finite
differences on every backend and through the ant's contacts, termination, contact signals):
``test_env_physics.py``.

JAX compiles Brax slowly on a CPU (tens of seconds per function), so every test shares a few module-scoped
envs at one batch size (``N = 2``); the persistent compilation cache makes later runs load them instead
(that cache: ``tests/plugins/brax/test_jax_cache.py``).
"""
from __future__ import annotations

import pytest
import torch

import mbmix_fw as mb
from mbmix_fw.testing import check_env

pytestmark = pytest.mark.timeout(3600)  # compiling Brax takes minutes per function on a loaded CPU

pytest.importorskip("jax")  # never skipped in CI: the test extra installs jax and brax
from mbmix_brax import BraxConfig  # noqa: E402
from mbmix_brax.bridge import JaxFunction, jax, to_jax, to_torch  # noqa: E402
from mbmix_brax.env import BraxEnv  # noqa: E402

jnp = jax.numpy
N = 2


def make_env(name, backend="generalized", float64=True, episode_length=50):
    return BraxEnv(BraxConfig(name=name, backend=backend, num_envs=N, float64=float64,
                              episode_length=episode_length))


@pytest.fixture(scope="module")
def reacher():
    return make_env("reacher")


def brax_reference(env: BraxEnv, seed: int, action: torch.Tensor):
    """Brax's own reset and step on the keys ``env.reset`` draws from a generator seeded ``seed``."""
    seeds = torch.randint(0, 2**31 - 1, (N, 2), generator=torch.Generator().manual_seed(seed), dtype=torch.int32)
    with jax.enable_x64(True):
        keys = jax.lax.bitcast_convert_type(to_jax(seeds), jnp.uint32)
        state = jax.jit(jax.vmap(env.brax_env.reset))(keys)  # jitted: run op by op, every operation compiles alone
        after = jax.jit(jax.vmap(env.brax_env.step))(state, to_jax(action.double()))
    return state, after


def as_torch(array):
    return to_torch(array).double()


@pytest.mark.slow  # compiles Brax (minutes on a 2-core CPU without the JAX cache)
def test_reset_transition_and_score_are_brax_reset_and_step(reacher):
    gen = torch.Generator().manual_seed(0)
    action = torch.rand(N, reacher.action_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    state0, after = brax_reference(reacher, 3, action)
    x = reacher.reset(N, torch.Generator().manual_seed(3)).double()
    ps = state0.pipeline_state
    torch.testing.assert_close(x, torch.cat([as_torch(ps.q), as_torch(ps.qd)], -1), rtol=1e-6, atol=1e-7)
    x = torch.cat([as_torch(ps.q), as_torch(ps.qd)], -1)  # exactly Brax's state (reset returns float32)
    torch.testing.assert_close(reacher.observe(x), as_torch(state0.obs), rtol=1e-12, atol=1e-12)

    out = reacher.transition(x, action)
    expected_next = torch.cat([as_torch(after.pipeline_state.q), as_torch(after.pipeline_state.qd)], -1)
    torch.testing.assert_close(out.next_state, expected_next, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.reward, as_torch(after.reward), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.next_obs, as_torch(after.obs), rtol=1e-12, atol=1e-12)
    assert torch.equal(out.terminated, as_torch(after.done) > 0.5)
    assert reacher.reward(x, action, expected_next).abs().min() > 0  # the reward is not a constant
    scored = reacher.score(x, action, expected_next)
    torch.testing.assert_close(scored.reward, as_torch(after.reward), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(scored.next_obs, as_torch(after.obs), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(reacher.step(x, action, gen), expected_next, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(reacher.reward(x, action, expected_next), as_torch(after.reward))


@pytest.mark.slow  # compiles Brax (minutes on a 2-core CPU without the JAX cache)
def test_reset_replays_under_a_seeded_generator_and_varies_otherwise(reacher):
    a = reacher.reset(N, torch.Generator().manual_seed(5))
    b = reacher.reset(N, torch.Generator().manual_seed(5))
    c = reacher.reset(N, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a[0], a[1])
    assert a.dtype == torch.float32 and not a.requires_grad


@pytest.mark.slow  # compiles Brax (minutes on a 2-core CPU without the JAX cache)
def test_reacher_keeps_the_diffenv_contract(reacher):
    # one batch size: every other one would compile Brax again (the row independence of vmap is JAX's)
    check_env(reacher, batch_sizes=(N,))


@pytest.mark.slow  # compiles Brax (minutes on a 2-core CPU without the JAX cache)
def test_each_function_compiles_once_per_shape(reacher):
    x = reacher.reset(N, torch.Generator().manual_seed(7)).double().requires_grad_(True)
    a = torch.zeros(N, reacher.action_dim, dtype=torch.float64, requires_grad=True)
    for _ in range(3):
        out = reacher.transition(x, a)
        (out.reward.sum() + out.next_state.sum()).backward()
        with torch.no_grad():
            reacher.transition(x, a)
    # the no-grad call and the autograd forward share one executable; the backward is one more
    assert reacher._transition.compiled_shapes() == {"forward": 1, "recompute_pullback": 1}


@pytest.mark.slow  # compiles Brax (minutes on a 2-core CPU without the JAX cache)
def test_a_rollout_observes_only_its_first_states_and_takes_fresh_observations_from_reset(reacher, monkeypatch):
    observe, calls = reacher._observe, []
    monkeypatch.setattr(reacher, "_observe", lambda *t: (calls.append(len(t)), observe(*t))[1])
    g = torch.Generator().manual_seed(4)
    x0 = reacher.reset(N, g).double().requires_grad_(True)
    start = mb.Cursor(x0, torch.full((N,), reacher.episode_length - 2, dtype=torch.long))
    out = mb.rollout(lambda obs, gen: torch.tanh(obs[:, :2]), reacher, reacher, start, steps=4, generator=g)
    assert out.truncated[1].all() and not out.truncated[0].any()
    assert len(calls) == 1  # the window's first states only: no crossing to re-observe what a step returned
    assert torch.equal(out.obs[1], out.next_obs[0])
    monkeypatch.undo()
    torch.testing.assert_close(out.obs[2], reacher.observe(out.states[2]), rtol=1e-6, atol=1e-6)  # reset rows
    (grad,) = torch.autograd.grad(out.rewards[1].sum(), x0)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---- the bridge on small JAX functions (no Brax) ----


def test_dlpack_crossings_share_memory():
    t = torch.arange(8, dtype=torch.float32)
    assert to_jax(t).unsafe_buffer_pointer() == t.data_ptr()
    array = jnp.sin(jnp.arange(8.0))
    assert to_torch(array).data_ptr() == array.unsafe_buffer_pointer()


def test_float64_is_scoped_to_the_function_that_asks_for_it():
    third = lambda x: (x / 3.0,)  # noqa: E731
    f64, f32 = JaxFunction(third, (True,), x64=True), JaxFunction(third, (True,), x64=False)
    one = torch.ones(2, dtype=torch.float64)
    assert f64(one)[0].dtype == torch.float64 and f64(one)[0][0].item() == 1 / 3
    assert f32(one.float())[0].dtype == torch.float32
    assert not jax.config.jax_enable_x64  # nothing flipped the global switch


def poly(x, y):
    return (x ** 2 * y[:, :1], jnp.sum(x, axis=-1) > 0)


@pytest.mark.parametrize("backward", ["recompute", "residuals"])
def test_bridge_gradients_are_the_vjp_and_the_pullback_can_be_replayed(backward):
    fn = JaxFunction(poly, (True, False), x64=True, backward=backward)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    out, flag = fn(x, y)
    assert not flag.requires_grad and torch.equal(flag, x.detach().sum(-1) > 0)
    u = torch.randn(3, 4, dtype=torch.float64)
    gx1, gy1 = torch.autograd.grad(out, (x, y), u, retain_graph=True)
    gx2, gy2 = torch.autograd.grad(out, (x, y), 2 * u)  # replay: Sobolev probes take several VJPs
    torch.testing.assert_close(gx1, 2 * x.detach() * y.detach()[:, :1] * u)
    torch.testing.assert_close(gy1[:, 0], (x.detach() ** 2 * u).sum(-1))
    assert torch.equal(gy1[:, 1], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(gx2, 2 * gx1) and torch.testing.assert_close(gy2, 2 * gy1)


@pytest.mark.parametrize("backward", ["recompute", "residuals"])
def test_bridge_second_derivatives_are_an_error_not_zeros(backward):
    """create_graph=True through the bridge used to return gradients torch treated as constants."""
    fn = JaxFunction(poly, (True, False), x64=True, backward=backward, name="poly")
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    out, _ = fn(x, y)
    with pytest.raises(mb.BridgeError, match="poly: no second derivatives"):
        torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)


@pytest.mark.parametrize("backward", ["recompute", "residuals"])
def test_bridge_batched_probes_are_one_vmapped_pullback(backward):
    fn = JaxFunction(poly, (True, False), x64=True, backward=backward)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    out, _ = fn(x, y)
    u = torch.randn(5, 3, 4, dtype=torch.float64)
    gx, gy = torch.autograd.grad(out, (x, y), u, is_grads_batched=True, retain_graph=True)
    assert fn.batched_pullback._cache_size() == 1
    for p in range(5):
        torch.testing.assert_close((gx[p], gy[p]), torch.autograd.grad(out, (x, y), u[p], retain_graph=True))


@pytest.mark.slow  # compiles Brax (minutes on a 2-core CPU without the JAX cache)
def test_carried_pipeline_state_equals_rebuilding_it_and_is_used_only_for_the_own_output(reacher, monkeypatch):
    """A rollout steps from Brax's pipeline state when given the previous transition's next state, and the
    states, rewards and gradients agree with rebuilding it from (q, qd) every step (pipeline_init)."""
    g = torch.Generator().manual_seed(11)
    acts = (0.5 * torch.randn(4, N, reacher.action_dim, generator=g, dtype=torch.float64)).requires_grad_(True)
    x0 = reacher.reset(N, torch.Generator().manual_seed(12)).double()
    used = {}
    for carry in (True, False):
        monkeypatch.setattr(reacher, "carry_pipeline", carry)
        calls = []  # per transition: did it step from the carried pipeline state?
        monkeypatch.setattr(reacher, "_call", lambda fn, *t: (
            calls.append(fn is reacher._transition_from_pipeline), BraxEnv._call(reacher, fn, *t))[1])
        s, total = x0, 0.0
        for a in acts:
            out = reacher.transition(s, a)
            total = total + out.reward.sum()
            s = out.next_state
        (grad,) = torch.autograd.grad(total + s.pow(2).sum(), acts)
        used[carry] = (calls, s.detach(), grad)
    assert used[True][0] == [False, True, True, True] and not any(used[False][0])  # x0 is a copy: rebuilt
    torch.testing.assert_close(used[True][1:], used[False][1:], rtol=1e-7, atol=1e-9)


@pytest.mark.slow  # compiles Brax (minutes on a 2-core CPU without the JAX cache)
def test_a_state_from_elsewhere_rebuilds_the_pipeline_state(reacher, monkeypatch):
    monkeypatch.setattr(reacher, "carry_pipeline", True)
    x0 = reacher.reset(N, torch.Generator().manual_seed(13)).double()
    a = torch.zeros(N, reacher.action_dim, dtype=torch.float64)
    s1 = reacher.transition(x0, a).next_state
    assert reacher._carried_pipeline(s1) is not None
    assert reacher._carried_pipeline(s1.clone()) is None  # a copy (checkpoint, world model, detach)
    s1.add_(0.0)  # modified in place: the remembered pipeline state no longer describes it
    assert reacher._carried_pipeline(s1) is None
    fresh = reacher.reset(N, torch.Generator().manual_seed(14))
    assert reacher._carried_pipeline(fresh) is not None  # reset remembers Brax's own pipeline state
