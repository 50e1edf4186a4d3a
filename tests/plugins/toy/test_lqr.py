"""LQR: closed-form return vs Monte Carlo; exact gradient vs finite differences and vs BPTT."""
from __future__ import annotations

import math

import pytest
import torch

import mbmix_fw as mb
from mbmix_toy import LQR, LQRConfig
from mbmix_toy.lqr import system_matrices

F64 = mb.BuildContext(dtype=torch.float64)
GAMMA = 0.95


def make_env(**overrides) -> LQR:
    fields = dict(state_dim=3, action_dim=2, episode_length=15, noise_std=0.2, init_std=1.0, action_cost=0.3,
                  action_scale=0.8, spectral_radius=1.02)
    return LQR(LQRConfig(**{**fields, **overrides}), F64)


def make_policy(env: LQR, seed: int = 0) -> mb.TanhGaussianPolicy:
    torch.manual_seed(seed)
    policy = mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, hidden=[], squash=False, init_log_std=-0.7)
    policy = policy.double()
    with torch.no_grad():  # a controller that helps but is not optimal, so the gradient is not ~0
        policy.mean[0].weight.mul_(0.5)
        policy.mean[0].bias.fill_(0.3)
    return policy


def episode_returns(env, policy, n, generator, gamma=GAMMA) -> torch.Tensor:
    """Discounted return of ``n`` full episodes, differentiable w.r.t. the policy (BPTT, no critic)."""
    start = mb.Cursor(env.reset(n, generator), torch.zeros(n, dtype=torch.long))
    out = mb.rollout(lambda obs, g: policy(obs, g), env, env, start, env.episode_length, generator)
    assert out.truncated[-1].all() and not out.done[:-1].any()
    discount = gamma ** torch.arange(env.episode_length, dtype=torch.float64)
    return (discount[:, None] * out.rewards).sum(0)


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def test_closed_form_return_matches_monte_carlo():
    env, generator = make_env(), torch.Generator().manual_seed(1)
    policy = make_policy(env)
    with torch.no_grad():
        returns = episode_returns(env, policy, 40_000, generator)
    exact = float(env.expected_return(policy, GAMMA).detach())
    stderr = float(returns.std() / math.sqrt(returns.numel()))
    assert abs(float(returns.mean()) - exact) < 4 * stderr, (float(returns.mean()), exact, stderr)
    assert stderr < 0.01 * abs(exact)  # the test has power: a 4 % error in the closed form would fail it


def test_exact_gradient_matches_finite_differences_of_closed_form():
    env = make_env()
    policy = make_policy(env)
    grads = env.exact_policy_gradient(policy, GAMMA)
    params = list(policy.parameters())
    assert [g.shape for g in grads] == [p.shape for p in params]
    assert all(g.dtype == torch.float64 for g in grads)
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
            numeric = (plus - minus) / (2 * eps)
            assert grad.view(-1)[index].item() == pytest.approx(numeric, rel=1e-6, abs=1e-6)


def test_exact_gradient_matches_mean_of_bptt_gradients():
    env, generator = make_env(), torch.Generator().manual_seed(2)
    policy = make_policy(env)
    params = list(policy.parameters())
    samples = []
    for _ in range(40):
        objective = episode_returns(env, policy, 1000, generator).mean()
        samples.append(flat(torch.autograd.grad(objective, params)))
    samples = torch.stack(samples)
    mean, stderr = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    exact = flat(env.exact_policy_gradient(policy, GAMMA))
    z = (mean - exact) / stderr
    assert z.abs().max() < 4.5, z
    assert (mean - exact).norm() < 0.05 * exact.norm()


def test_noise_free_without_generator_and_noisy_with_one():
    env = make_env()
    s = env.reset(2000, torch.Generator().manual_seed(0))
    a = torch.zeros(2000, env.action_dim, dtype=torch.float64)
    A, _ = system_matrices(env.config)
    torch.testing.assert_close(env.step(s, a, None), s @ A.T)
    noise = env.step(s, a, torch.Generator().manual_seed(3)) - s @ A.T
    assert noise.std() == pytest.approx(0.2, rel=0.05) and noise.mean().abs() < 0.01


def test_system_depends_on_config_seed_only():
    config = LQRConfig(seed=3, spectral_radius=0.9)
    a1 = LQR(config, mb.BuildContext(seed=0)).A64
    a2 = LQR(config, mb.BuildContext(seed=99)).A64
    assert torch.equal(a1, a2)
    assert not torch.equal(a1, LQR(LQRConfig(seed=4), mb.BuildContext()).A64)
    assert float(torch.linalg.eigvals(a1).abs().max()) == pytest.approx(0.9)


@pytest.mark.parametrize("kwargs", [dict(hidden=[8]), dict(hidden=[], squash=True)])
def test_unsupported_policy_is_a_user_error(kwargs):
    env = make_env()
    policy = mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, **{"squash": False, **kwargs})
    with pytest.raises(mb.UserError, match="linear-Gaussian policy"):
        env.exact_policy_gradient(policy, GAMMA)
    wrong_size = mb.TanhGaussianPolicy(env.obs_dim + 1, env.action_dim, hidden=[], squash=False)
    with pytest.raises(mb.UserError, match="needs 3→2"):
        env.exact_policy_gradient(wrong_size, GAMMA)


@pytest.mark.parametrize("field, value", [("state_dim", 0), ("noise_std", -0.1), ("spectral_radius", 0.0),
                                          ("episode_length", 0), ("unknown", 1)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(Exception):
        LQRConfig(**{field: value})


def _window_gradients(env, policy, windows, batches, n, seed, horizon):
    """Per batch of ``n`` envs, the gradient of each truncated-BPTT window's per-env objective
    (``-H·loss``: the mean discounted window return), the windows carried one after another from resets."""
    from mbmix_estimators import Bptt, BpttConfig

    estimator = Bptt(BpttConfig(horizon=horizon, gamma=GAMMA))
    generator, params = torch.Generator().manual_seed(seed), list(policy.parameters())
    samples = []
    for _ in range(batches):
        cursor, per_window = mb.Cursor(env.reset(n, generator), torch.zeros(n, dtype=torch.long)), []
        for _ in range(windows):
            estimate = estimator.estimate(mb.EstimatorInput(
                policy_fn=lambda obs, g: policy(obs, g), value_fn=None, env=env, dynamics=env, start=cursor,
                generator=generator))
            per_window.append(flat(torch.autograd.grad(-horizon * estimate.loss, params)))
            cursor = estimate.rollout.end
        samples.append(torch.stack(per_window))
    return torch.stack(samples)  # [batches, windows, P]


def test_truncated_bptt_windows_carry_the_state_and_cut_the_graph():
    """Window k of truncated BPTT has the exact expected gradient ∇J_{k·H, H}: its start distribution is
    where the previous window left the batch (state carried), held constant (graph cut)."""
    env = make_env(episode_length=12)
    policy = make_policy(env)
    horizon = 4
    samples = _window_gradients(env, policy, windows=3, batches=30, n=1000, seed=5, horizon=horizon)
    mean, stderr = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    for k in range(3):
        exact = flat(env.exact_window_gradient(policy, GAMMA, (k * horizon, horizon)))
        z = (mean[k] - exact) / stderr[k]
        assert z.abs().max() < 4.5, (k, z)
        assert (mean[k] - exact).norm() < 0.05 * exact.norm(), k
        if k:  # power: the state was really carried (not reset) and the graph really cut
            from_reset = flat(env.exact_window_gradient(policy, GAMMA, (0, horizon)))
            uncut = flat(torch.autograd.grad(
                policy_window_uncut(env, policy, k * horizon, horizon), list(policy.parameters())))
            assert ((from_reset - exact) / stderr[k]).abs().max() > 10
            assert ((uncut - exact) / stderr[k]).abs().max() > 10


def policy_window_uncut(env, policy, skip, steps):
    """``Σ_{h<H} γ^h E[r_{k+h}]`` *with* gradient through the start distribution (what an uncut graph gives)."""
    return sum(GAMMA**h * policy_value_prefix(env, policy, skip + h) for h in range(steps))


def policy_value_prefix(env, policy, t):
    """``E[r_t]`` under ``policy``, differentiable through every earlier step: the difference of the
    undiscounted closed forms of the first ``t+1`` and ``t`` steps."""
    from mbmix_toy.linear_policy import policy_value

    def upto(steps):
        if steps == 0:
            return torch.zeros((), dtype=torch.float64)
        short = LQR(env.config.model_copy(update={"episode_length": steps}), F64)
        return policy_value(policy, env.obs_dim, env.action_dim, "lqr",
                            lambda W, b, ls: short.closed_form_return(W, b, ls, 1.0))

    return upto(t + 1) - upto(t)
