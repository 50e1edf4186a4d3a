"""The gradient-variance diagnostic: statistics, exact-gradient bias, the study and the recipe entry."""
from __future__ import annotations

import json
import math

import pytest
import torch

import mbmix_fw as mb
from mbmix_estimators import Bptt, BpttConfig, Mix, MixConfig, Shac, ShacConfig
from mbmix_fw.diagnostics.gradient_statistics import fit_critic_to_policy, gradient_samples, gradient_statistics
from mbmix_fw.diagnostics.gradient_statistics import statistics_of
from mbmix_fw.diagnostics.variance import plot_variance_study, variance_from_recipe, variance_study
from mbmix_fw.testing import LinearEnv


class ExactLinearEnv(LinearEnv):
    """Noise-free LinearEnv whose episode return under a *deterministic* linear policy is a known
    function of the parameters, so ``exact_policy_gradient`` is autograd through a closed form over
    the reset distribution: E|s|² terms via the second moment (s_0 ~ N(0, I))."""

    def exact_policy_gradient(self, policy, gamma):
        linear = policy.mean[0]
        W, b = linear.weight.detach().double().requires_grad_(), linear.bias.detach().double().requires_grad_()
        A, B = self.A.double(), self.B.double()
        mean = torch.zeros(self.state_dim, dtype=torch.float64)
        cov = torch.eye(self.state_dim, dtype=torch.float64)
        total = 0.0
        for t in range(self.episode_length):
            K = A + B @ W
            a_mean, a_cov = W @ mean + b, W @ cov @ W.T
            mean, cov = K @ mean + B @ b, K @ cov @ K.T
            total = total - gamma**t * (torch.trace(cov) + mean.pow(2).sum()
                                        + 0.1 * (torch.trace(a_cov) + a_mean.pow(2).sum()))
        gw, gb = torch.autograd.grad(total, (W, b))
        by_id = {id(linear.weight): gw, id(linear.bias): gb, id(policy.log_std): torch.zeros_like(policy.log_std)}
        return [by_id[id(p)] for p in policy.parameters()]


def linear_policy(env, log_std=-30.0):
    torch.manual_seed(0)
    policy = mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, hidden=(), squash=False, init_log_std=log_std)
    with torch.no_grad():
        policy.mean[0].weight.mul_(0.3)
    return policy


def test_statistics_are_the_unbiased_trace_and_the_bias_norm():
    samples = torch.tensor([[1.0, 2.0], [3.0, 2.0], [2.0, 5.0]], dtype=torch.float64)
    stats = statistics_of(samples, exact=torch.tensor([0.0, 0.0]))
    var = samples.var(0, unbiased=True).sum()
    assert stats.variance == pytest.approx(float(var))
    assert stats.bias == pytest.approx(float(samples.mean(0).norm()))
    assert stats.relative_bias is None  # exact gradient of norm 0
    assert stats.noise_floor == pytest.approx(math.sqrt(float(var) / 3))
    direction = samples.mean(0) / samples.mean(0).norm()
    assert stats.bias_se == pytest.approx(float((samples @ direction).std() / math.sqrt(3)))


def test_bptt_is_unbiased_and_short_shac_is_biased_against_the_exact_gradient():
    """BPTT over the whole (deterministic) episode is the exact gradient up to sampling of s_0; SHAC with
    a zero critic over half the episode misses the second half."""
    env = ExactLinearEnv(num_envs=64, episode_length=10)
    policy = linear_policy(env)
    stats = gradient_statistics(policy, lambda o: torch.zeros(o.shape[:-1]), env, Bptt(BpttConfig(gamma=0.9)),
                                samples=64, generator=torch.Generator().manual_seed(0))
    assert stats.bias < 4 * stats.noise_floor + 1e-6
    assert stats.relative_bias < 0.05
    short = gradient_statistics(policy, lambda o: torch.zeros(o.shape[:-1]), env, Shac(ShacConfig(horizon=5, gamma=0.9)),
                                samples=16, generator=torch.Generator().manual_seed(0))
    assert short.bias > 10 * short.noise_floor


def test_samples_start_fresh_episodes_and_scale_by_the_horizon():
    """One sample at N envs equals -T·∇loss of an estimate from Cursor(reset(N), t=0)."""
    env = ExactLinearEnv(num_envs=8, episode_length=10)
    policy = linear_policy(env, log_std=-1.0)
    value_fn = mb.Critic(env.obs_dim, hidden=(8,)).requires_grad_(False)
    est = Mix(MixConfig(lam=0.7, horizon=6, gamma=0.95))
    drawn = gradient_samples(policy, value_fn, env, est, 2, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    start = mb.Cursor(env.reset(8, g), torch.zeros(8, dtype=torch.long))
    loss = est.estimate(mb.EstimatorInput(policy, value_fn, env, env, start, g)).loss
    grads = torch.autograd.grad(loss, list(policy.parameters()))
    torch.testing.assert_close(drawn[0], -6 * torch.cat([x.reshape(-1) for x in grads]).double())
    assert not torch.equal(drawn[0], drawn[1])


def test_variance_study_rows_and_plot(tmp_path):
    env = ExactLinearEnv(num_envs=16, episode_length=12)
    policy = linear_policy(env, log_std=-1.0)
    critic = mb.Critic(env.obs_dim, hidden=(16,))
    value_fn, fit = fit_critic_to_policy(env, policy, critic, 0.95, torch.Generator().manual_seed(0),
                                         iterations=20, horizon=6)
    assert fit["critic/td_loss_last"] < fit["critic/td_loss_first"]
    critic.requires_grad_(False)
    configs = [("shac 3", Shac(ShacConfig(horizon=3, gamma=0.95))), ("shac 6", Shac(ShacConfig(horizon=6, gamma=0.95)))]
    configs += [(f"mix {lam}", Mix(MixConfig(lam=lam, horizon=6, gamma=0.95))) for lam in (0.0, 0.5, 1.0)]
    rows = variance_study(env, policy, value_fn, configs, samples=6)
    by = {r["label"]: r for r in rows}
    for row in rows:
        assert {"label", "kind", "horizon", "lam", "variance", "bias", "mean_grad_norm"} <= row.keys()
        assert row["bias"] is not None and row["variance"] > 0
    assert by["shac 3"]["kind"] == "shac" and by["shac 3"]["lam"] is None and by["mix 0.5"]["lam"] == 0.5
    # λ = 1 is SHAC at H_max, sample for sample (common random numbers)
    assert by["mix 1.0"]["variance"] == pytest.approx(by["shac 6"]["variance"], rel=1e-5)
    assert by["mix 0.0"]["variance"] < by["mix 0.5"]["variance"] < by["mix 1.0"]["variance"]
    png = plot_variance_study(rows, tmp_path / "study.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_no_exact_gradient_gives_no_bias():
    env = LinearEnv(num_envs=4, episode_length=6)
    policy = mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, hidden=(4,))
    rows = variance_study(env, policy, lambda o: torch.zeros(o.shape[:-1]),
                          [("shac", Shac(ShacConfig(horizon=3)))], samples=3)
    assert rows[0]["bias"] is None and rows[0]["variance"] > 0


def test_variance_from_recipe_on_lqr(tmp_path):
    from mbmix_fw.building.recipe import validate_recipe
    from mbmix_fw.building.registry import default_registry

    registry = default_registry()
    recipe = validate_recipe({
        "run": {"seed": 3},
        "env": {"kind": "lqr", "episode_length": 16, "num_envs": 8},
        "estimator": {"kind": "mix", "horizon": 8, "lam": 0.9},
        "policy": {"hidden": [], "squash": False, "normalize_obs": False},
        "critic": {"hidden": [16]},
    }, registry)
    rows = variance_from_recipe(recipe, registry, samples=4, json_out=tmp_path / "v.json",
                                png_out=tmp_path / "v.png", critic_iterations=10, lams=(0.5, 1.0))
    assert [r["label"] for r in rows] == ["shac H=2", "shac H=4", "shac H=8", "mix λ=0.5 H=8", "mix λ=1 H=8"]
    assert all(r["bias"] is not None for r in rows)
    saved = json.loads((tmp_path / "v.json").read_text())
    assert saved["settings"]["h_max"] == 8 and len(saved["rows"]) == 5
    assert (tmp_path / "v.png").exists()


# ---- SHAC's bias–variance frontier (benchmarks/variance.py) ----
def _point(label, bias, variance, variance_se=0.1):
    return {"label": label, "bias": bias, "variance": variance, "variance_se": variance_se}


FRONTIER = [_point("H=1", 10.0, 1.0), _point("H=2", 6.0, 3.0), _point("H=4", 6.5, 5.0),  # H=4 is dominated
            _point("H=8", 2.0, 11.0)]


def test_pareto_frontier_drops_dominated_points():
    from mbmix_fw.diagnostics.variance import pareto_frontier

    assert [r["label"] for r in pareto_frontier(FRONTIER)] == ["H=8", "H=2", "H=1"]


@pytest.mark.parametrize("bias, variance, ratio, position", [
    (4.0, 7.0, 1.0, "on"),       # halfway between H=8 (2, 11) and H=2 (6, 3): frontier variance 7
    (4.0, 5.0, 5 / 7, "below"),  # 2 less than the frontier, s.e. √(0.1²/2 + 0.1²) ≈ 0.12
    (4.0, 9.0, 9 / 7, "above"),
    (8.0, 1.5, 1.5 / 2.0, "below"),  # between H=2 (6, 3) and H=1 (10, 1): frontier variance 2
    (12.0, 1.5, 1.5, "above"),   # more bias than every SHAC H and more variance than H=1
    (1.0, 10.0, 10 / 11, "below"),  # less bias than every SHAC H and less variance than H=8
])
def test_frontier_position(bias, variance, ratio, position):
    from mbmix_fw.diagnostics.variance import frontier_position

    found = frontier_position(FRONTIER, _point("mix", bias, variance))
    assert found["ratio"] == pytest.approx(ratio)
    assert found["position"] == position
    assert found["frontier"] == ["H=8", "H=2", "H=1"]


def test_variance_standard_error_matches_the_spread_of_repeated_estimates():
    from mbmix_fw.diagnostics.gradient_statistics import statistics_of

    g = torch.Generator().manual_seed(0)
    draws = [statistics_of(torch.randn(40, 3, generator=g, dtype=torch.float64) * 2.0) for _ in range(400)]
    spread = torch.tensor([d.variance for d in draws]).std()
    mean_se = sum(d.variance_se for d in draws) / len(draws)
    assert mean_se == pytest.approx(float(spread), rel=0.15)
    assert sum(d.variance for d in draws) / len(draws) == pytest.approx(12.0, rel=0.05)  # 3 dims × 2²
