"""Tabular MDP: exact gradient vs finite differences; BPTT through the relaxation vs the exact gradient."""
from __future__ import annotations

import math

import pytest
import torch

import mbmix_fw as mb
from mbmix_toy import TabularMDP, TabularMDPConfig
from mbmix_toy.tabular_mdp import mdp_tables

F64 = mb.BuildContext(dtype=torch.float64)
GAMMA = 0.9


def make_env(**overrides) -> TabularMDP:
    return TabularMDP(TabularMDPConfig(**{"episode_length": 12, **overrides}), F64)


def make_policy(env: TabularMDP, seed: int = 0, state_dependent: bool = True) -> mb.TanhGaussianPolicy:
    torch.manual_seed(seed)
    policy = mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, hidden=[], squash=False, init_log_std=-20.0)
    policy = policy.double()
    with torch.no_grad():
        policy.mean[0].weight.normal_(0.0, 1.0 if state_dependent else 0.0)
        policy.mean[0].bias.normal_(0.0, 0.5)
    return policy


def episode_returns(env, policy, n, generator) -> torch.Tensor:
    start = mb.Cursor(env.reset(n, generator), torch.zeros(n, dtype=torch.long))
    out = mb.rollout(lambda obs, g: policy(obs, g), env, env, start, env.episode_length, generator)
    discount = GAMMA ** torch.arange(env.episode_length, dtype=torch.float64)
    return (discount[:, None] * out.rewards).sum(0)


def bptt_gradient_stats(env, policy, batches=16, n=2000, seed=1):
    """Mean and standard error of the BPTT gradient over ``batches`` independent batches of episodes."""
    generator, params = torch.Generator().manual_seed(seed), list(policy.parameters())
    samples = []
    for _ in range(batches):
        objective = episode_returns(env, policy, n, generator).mean()
        samples.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(objective, params)]))
    samples = torch.stack(samples)
    return samples.mean(0), samples.std(0) / math.sqrt(batches)


def exact_flat(env, policy) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in env.exact_policy_gradient(policy, GAMMA)])


def test_step_is_numerically_one_hot_and_follows_transition_probabilities():
    env = make_env(n_states=4, n_actions=2)
    _, P = mdp_tables(env.config)
    state = torch.zeros(20_000, 4, dtype=torch.float64)
    state[:, 2] = 1
    logits = torch.tensor([[0.3, -0.4]], dtype=torch.float64).expand(20_000, 2)
    nxt = env.step(state, logits, torch.Generator().manual_seed(0))
    assert torch.equal(nxt.sum(-1), torch.ones(20_000, dtype=torch.float64))
    assert torch.equal(nxt.max(-1).values, torch.ones(20_000, dtype=torch.float64))
    expected = torch.softmax(logits[0], -1) @ P[2]
    torch.testing.assert_close(nxt.mean(0), expected, atol=0.015, rtol=0)


def test_closed_form_return_matches_monte_carlo():
    env = make_env()
    policy = make_policy(env)
    with torch.no_grad():
        returns = episode_returns(env, policy, 30_000, torch.Generator().manual_seed(4))
    exact = float(env.expected_return(policy, GAMMA).detach())
    stderr = float(returns.std() / math.sqrt(returns.numel()))
    assert abs(float(returns.mean()) - exact) < 4 * stderr, (float(returns.mean()), exact, stderr)


def test_exact_gradient_matches_finite_differences():
    env = make_env(n_states=6, n_actions=3)
    policy = make_policy(env)
    grads = env.exact_policy_gradient(policy, GAMMA)
    params = list(policy.parameters())
    assert [g.shape for g in grads] == [p.shape for p in params]
    eps = 1e-6
    for param, grad in zip(params, grads):
        for index in range(param.numel()):
            with torch.no_grad():
                old = param.view(-1)[index].item()
                param.view(-1)[index] = old + eps
                plus = float(env.expected_return(policy, GAMMA))
                param.view(-1)[index] = old - eps
                minus = float(env.expected_return(policy, GAMMA))
                param.view(-1)[index] = old
            assert grad.view(-1)[index].item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-6, abs=1e-8)
    weight_grad = grads[[p is policy.mean[0].weight for p in params].index(True)]
    assert weight_grad.abs().sum() > 0.1  # not a degenerate case


def test_bptt_through_score_relaxation_is_unbiased():
    env = make_env()
    policy = make_policy(env)
    mean, stderr = bptt_gradient_stats(env, policy)
    exact = exact_flat(env, policy)
    informative = stderr > 0  # log_std entries: exactly 0 in both up to ~e^-20
    z = (mean - exact)[informative] / stderr[informative]
    assert z.abs().max() < 5, z.abs().max()
    assert (mean - exact).norm() < 0.05 * exact.norm()


def test_straight_through_relaxation_is_biased_for_state_dependent_policies():
    env = make_env(relaxation="straight_through")
    policy = make_policy(env)
    mean, stderr = bptt_gradient_stats(env, policy, batches=8, n=1500)
    exact = exact_flat(env, policy)
    assert (mean - exact).norm() > 0.05 * exact.norm()  # ≈ 12 %, far beyond Monte-Carlo error:
    assert (mean - exact).norm() > 5 * stderr.norm()


def test_straight_through_relaxation_is_unbiased_for_state_independent_policies():
    env = make_env(relaxation="straight_through")
    policy = make_policy(env, state_dependent=False)
    mean, stderr = bptt_gradient_stats(env, policy, batches=8, n=1500)
    exact = exact_flat(env, policy)
    informative = stderr > 0
    assert ((mean - exact)[informative] / stderr[informative]).abs().max() < 5


def test_noisy_policy_is_refused():
    env = make_env()
    policy = mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, hidden=[], squash=False, init_log_std=-1.0)
    with pytest.raises(mb.UserError, match="init_log_std = -20"):
        env.exact_policy_gradient(policy, GAMMA)


def test_tables_depend_on_config_seed_only():
    config = TabularMDPConfig(seed=5)
    assert torch.equal(TabularMDP(config, mb.BuildContext(seed=1)).P64, TabularMDP(config, mb.BuildContext(seed=2)).P64)
    assert not torch.equal(mdp_tables(config)[0], mdp_tables(TabularMDPConfig(seed=6))[0])
    torch.testing.assert_close(mdp_tables(config)[1].sum(-1), torch.ones(20, 5, dtype=torch.float64))
