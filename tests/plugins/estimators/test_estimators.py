"""The built-in estimators (``shac``, ``mix``, ``bptt``): configs, registration, exact gradients."""
from __future__ import annotations

import attrs
import importlib.metadata

import pydantic
import pytest
import torch

import mbmix_fw as mb
from mbmix_estimators import Bptt, BpttConfig, Mix, MixConfig, Shac, ShacConfig, register_estimators
from mbmix_fw.testing import LinearEnv, tiny_trainer


class NoisyFallingEnv(LinearEnv):
    """LinearEnv in float64, contracting, with process noise from the generator and a termination
    (first coordinate above ``limit``), so windows contain terminations, truncations and noise."""

    def __init__(self, num_envs=6, episode_length=5, limit=1.2, noise=0.05, seed=0):
        super().__init__(state_dim=3, action_dim=2, num_envs=num_envs, episode_length=episode_length, seed=seed)
        self.A = 0.9 * self.A.double() / torch.linalg.matrix_norm(self.A.double(), ord=2)
        self.B = self.B.double()
        self.limit, self.noise = limit, noise

    def reset(self, n, generator=None):
        return torch.randn(n, self.state_dim, generator=generator, dtype=torch.float64)

    def step(self, state, action, generator=None):
        nxt = super().step(state, action)
        if generator is not None and self.noise:
            nxt = nxt + self.noise * torch.randn(nxt.shape, generator=generator, dtype=nxt.dtype)
        return nxt

    def terminated(self, state):
        return state[:, 0] > self.limit


def make_policy(env, seed=0, log_std=-0.5):
    torch.manual_seed(seed)
    return mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, hidden=(8,), init_log_std=log_std).double()


def make_value_fn(env, seed=1):
    torch.manual_seed(seed)
    critic = mb.Critic(env.obs_dim, hidden=(8,)).double().requires_grad_(False)
    return critic


def estimator_input(env, policy, value_fn, seed=0, start_t=None):
    """A fixed start cursor (mixed episode times, so truncations fall inside the window) and a generator
    seeded the same way every call: the loss is then a deterministic function of the parameters."""
    g = torch.Generator().manual_seed(seed)
    state = env.reset(env.num_envs, g)
    t = torch.arange(env.num_envs) % env.episode_length if start_t is None else start_t
    return mb.EstimatorInput(policy_fn=policy, value_fn=value_fn, env=env, dynamics=env,
                             start=mb.Cursor(state, t), generator=g)


def grads(estimator, env, policy, value_fn, seed=0):
    policy.zero_grad(set_to_none=True)
    est = estimator.estimate(estimator_input(env, policy, value_fn, seed))
    est.loss.backward()
    return [p.grad.clone() for p in policy.parameters()], est


# ---------------------------------------------------------------- configs and registration
@pytest.mark.parametrize("cls,bad", [
    (MixConfig, {"lam": 1.1}),
    (MixConfig, {"lam": -0.1}),
    (MixConfig, {"horizon": 0}),
    (MixConfig, {"horizon": 8, "interval": 3}),
    (MixConfig, {"interval": 0}),
    (MixConfig, {"horizon": 8, "interval": 2, "start_times": "all"}),
    (MixConfig, {"gamma": 0.0}),
    (MixConfig, {"typo_lam": 0.5}),
    (ShacConfig, {"horizon": 0}),
    (ShacConfig, {"gamma": 1.5}),
    (BpttConfig, {"checkpoint_segments": -1}),
    (BpttConfig, {"horizon": 0}),
])
def test_bad_options_fail_validation(cls, bad):
    with pytest.raises(pydantic.ValidationError):
        cls(**bad)


def test_good_options_validate():
    assert MixConfig(lam=0.0, horizon=16, interval=4).interval == 4
    assert MixConfig(lam=1.0, horizon=1).horizon == 1
    assert MixConfig(start_times="all").start_times == "all"


def test_plugin_registers_three_estimators_through_its_entry_point():
    entry = [e for e in importlib.metadata.entry_points(group="mbmix_fw") if e.name == "estimators"]
    assert entry and entry[0].value == "mbmix_estimators"
    seen = {}
    register_estimators(lambda config, factory: seen.setdefault(config.model_fields["kind"].default, factory))
    assert set(seen) == {"shac", "mix", "bptt"}
    ctx = mb.BuildContext.cpu()
    assert isinstance(seen["shac"](ShacConfig(), ctx), Shac)
    assert isinstance(seen["mix"](MixConfig(), ctx), Mix)
    assert isinstance(seen["bptt"](BpttConfig(), ctx), Bptt)
    env = NoisyFallingEnv()
    assert seen["mix"](MixConfig(horizon=12), mb.BuildContext.cpu()).horizon(env) == 12
    bptt = seen["bptt"](BpttConfig(), mb.BuildContext.cpu())
    assert bptt.horizon(env) == env.episode_length and not bptt.uses_critic


# ---------------------------------------------------------------- λ = 1 is SHAC, exactly
@pytest.mark.parametrize("horizon", [1, 7, 12])
def test_mix_at_lambda_one_gives_the_shac_gradient(horizon):
    env = NoisyFallingEnv()
    policy, value_fn = make_policy(env), make_value_fn(env)
    g_shac, e_shac = grads(Shac(ShacConfig(horizon=horizon, gamma=0.95)), env, policy, value_fn)
    g_mix, e_mix = grads(Mix(MixConfig(lam=1.0, horizon=horizon, gamma=0.95)), env, policy, value_fn)
    if horizon == 12:
        assert e_shac.rollout.terminated.any() and e_shac.rollout.truncated.any()
    torch.testing.assert_close(e_mix.loss, e_shac.loss)
    for a, b in zip(g_mix, g_shac):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_lower_lambda_changes_the_gradient():
    env = NoisyFallingEnv()
    policy, value_fn = make_policy(env), make_value_fn(env)
    g1, _ = grads(Mix(MixConfig(lam=1.0, horizon=12)), env, policy, value_fn)
    g5, _ = grads(Mix(MixConfig(lam=0.5, horizon=12)), env, policy, value_fn)
    assert not all(torch.allclose(a, b) for a, b in zip(g1, g5))


# ---------------------------------------------------------------- gradients against finite differences
def central_differences(loss_of_params, params, h=1e-6):
    out = []
    for p in params:
        flat = torch.zeros(p.numel(), dtype=torch.float64)
        for i in range(p.numel()):
            with torch.no_grad():
                original = p.view(-1)[i].item()
                p.view(-1)[i] = original + h
                up = loss_of_params()
                p.view(-1)[i] = original - h
                down = loss_of_params()
                p.view(-1)[i] = original
            flat[i] = (up - down) / (2 * h)
        out.append(flat.view_as(p))
    return out


@pytest.mark.parametrize("estimator", [
    Shac(ShacConfig(horizon=8, gamma=0.9)),
    Mix(MixConfig(lam=0.7, horizon=8, gamma=0.9)),
    Mix(MixConfig(lam=0.4, horizon=8, interval=2, gamma=0.9)),
    Mix(MixConfig(lam=0.6, horizon=8, gamma=0.9, start_times="all")),
    Bptt(BpttConfig(gamma=0.9)),
    Bptt(BpttConfig(gamma=0.9, checkpoint_segments=2)),
    Bptt(BpttConfig(gamma=0.9, horizon=3)),
], ids=["shac", "mix", "mix-interval2", "mix-all-starts", "bptt", "bptt-checkpointed", "bptt-truncated"])
def test_policy_gradient_matches_central_differences(estimator):
    """Stochastic policy and process noise with the generator re-seeded per evaluation (common random
    numbers): the loss is a smooth deterministic function of θ, so autograd must equal its differences."""
    env = NoisyFallingEnv()
    policy, value_fn = make_policy(env), make_value_fn(env)
    analytic, est = grads(estimator, env, policy, value_fn)
    assert est.rollout.done.any()
    numeric = central_differences(
        lambda: estimator.estimate(estimator_input(env, policy, value_fn)).loss.item(), list(policy.parameters())
    )
    for a, n in zip(analytic, numeric):
        torch.testing.assert_close(a, n, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- BPTT
def test_bptt_starts_fresh_episodes_and_runs_whole_episodes():
    env = NoisyFallingEnv(episode_length=9)
    policy = make_policy(env)
    inp = estimator_input(env, policy, make_value_fn(env))
    est = Bptt(BpttConfig()).estimate(inp)
    assert est.rollout.steps == 9
    assert not torch.equal(est.rollout.states[0], inp.start.state)  # the cursor was replaced by a reset
    first_done = est.rollout.truncated.nonzero()
    assert (first_done[:, 0] == 8).any()  # rows that never terminated are truncated at the last step
    assert all(torch.isfinite(torch.as_tensor(v)) for v in est.metrics.values())
    assert {"estimator/return_mean", "estimator/reward_mean"} <= est.metrics.keys()


def test_bptt_loss_is_the_discounted_episode_return():
    env = NoisyFallingEnv(episode_length=6, limit=1e9)  # no terminations: one segment per env
    policy = make_policy(env)
    est = Bptt(BpttConfig(gamma=0.8)).estimate(estimator_input(env, policy, make_value_fn(env)))
    discount = 0.8 ** torch.arange(6, dtype=torch.float64).unsqueeze(1)
    expected = -(discount * est.rollout.rewards).sum(0).mean() / 6
    torch.testing.assert_close(est.loss, expected)


def test_checkpointed_bptt_gives_the_same_gradient_and_generator_state():
    env = NoisyFallingEnv(episode_length=23)
    policy, value_fn = make_policy(env), make_value_fn(env)
    results = []
    for segments in (0, 1, 4, 23):
        inp = estimator_input(env, policy, value_fn, seed=3)
        policy.zero_grad(set_to_none=True)
        est = Bptt(BpttConfig(checkpoint_segments=segments)).estimate(inp)
        est.loss.backward()
        results.append(([p.grad.clone() for p in policy.parameters()], inp.generator.get_state(), est))
    (ref, ref_state, ref_est), *others = results
    assert ref_est.rollout.terminated.any()
    for grad, state, est in others:
        torch.testing.assert_close(est.rollout.rewards, ref_est.rollout.rewards)
        assert torch.equal(state, ref_state)  # recomputation replayed the generator, then restored it
        for a, b in zip(grad, ref):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.slow  # ~2 s on an idle 2-core machine, 40 s under heavy load
def test_checkpointed_bptt_runs_a_1000_step_episode():
    env = NoisyFallingEnv(num_envs=4, episode_length=1000, limit=1e9)
    policy = make_policy(env)
    est = Bptt(BpttConfig(checkpoint_segments=20)).estimate(estimator_input(env, policy, make_value_fn(env)))
    est.loss.backward()
    assert est.rollout.steps == 1000
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters())


def test_bptt_model_branches_start_from_their_given_states():
    env = NoisyFallingEnv(episode_length=9)
    policy = make_policy(env)
    inp = estimator_input(env, policy, make_value_fn(env))
    branch = attrs.evolve(inp, start=mb.Cursor(inp.start.state, None))  # buffer states, no time limit
    est = Bptt(BpttConfig()).estimate(branch)
    assert torch.equal(est.rollout.states[0], inp.start.state)


def test_truncated_bptt_continues_the_cursor_and_cuts_the_graph():
    env = NoisyFallingEnv(episode_length=9, limit=1e9)
    policy = make_policy(env)
    inp = estimator_input(env, policy, make_value_fn(env), start_t=torch.zeros(env.num_envs, dtype=torch.long))
    estimator = Bptt(BpttConfig(horizon=4, gamma=0.8))
    assert estimator.horizon(env) == 4 and estimator.horizon_bounds(env) == (1, 9)
    first = estimator.estimate(inp)
    assert first.rollout.steps == 4 and torch.equal(first.rollout.states[0], inp.start.state)  # no reset
    second = estimator.estimate(attrs.evolve(inp, start=first.rollout.end))  # steps 4…7 of 9: no episode end
    assert not second.rollout.done.any() and torch.equal(second.rollout.end.t, torch.full((6,), 8))
    assert torch.equal(second.rollout.states[0], first.rollout.end.state)
    assert torch.autograd.grad(second.loss, first.rollout.actions, allow_unused=True) == (None,)  # graph cut
    discount = 0.8 ** torch.arange(4, dtype=torch.float64).unsqueeze(1)  # restarts at the window start
    torch.testing.assert_close(second.loss, -(discount * second.rollout.rewards).sum(0).mean() / 4)


def test_truncated_bptt_trains_through_the_trainer():

    env = LinearEnv(num_envs=4, episode_length=6)
    trainer = tiny_trainer(env, Bptt(BpttConfig(horizon=4)), iterations=3)
    final = trainer.train()
    rows = trainer.log.history[1:]
    assert [r["plan/horizon"] for r in rows] == [4.0, 4.0, 4.0] and final["env/steps"] == 3 * 4 * 4
    assert rows[1]["train/episodes"] == 4  # the episodes of 6 steps ended inside the second window
    assert torch.equal(trainer.cursor.t, torch.full((4,), 0))  # 12 steps = two whole episodes
