"""Split-half gradient agreement (``mbmix_fw/training/agreement.py``) and the ``agree`` scheduler: each half's
gradient from the one backward against independent parameters and finite differences, one backward per
update, the rule, bad settings."""
from __future__ import annotations

import math

import pydantic
import pytest
import torch
from torch.func import functional_call

import mbmix_fw as mb
from mbmix_estimators import Shac, ShacConfig
from mbmix_fw.testing import LinearEnv, tiny_trainer
from mbmix_fw.training.agreement import HalfSplitPolicy
from mbmix_fw.training.trainer import Trainer
from mbmix_schedulers import Agree, AgreeConfig, ModelFree, ModelFreeConfig


class Float64Env(LinearEnv):
    def reset(self, n, generator=None):
        return super().reset(n, generator).double()

    def step(self, state, action, generator=None):
        return state @ self.A.double().T + action @ self.B.double().T


def setup(rows=6, steps=5):
    env = Float64Env(num_envs=rows, episode_length=50)
    torch.manual_seed(0)
    policy = mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, hidden=(8,)).double()
    value = mb.Critic(env.obs_dim, hidden=(8,)).double().requires_grad_(False)
    start = mb.Cursor(env.reset(rows, torch.Generator().manual_seed(1)), torch.zeros(rows, dtype=torch.long))

    def loss_with(policy_fn):
        inp = mb.EstimatorInput(policy_fn=policy_fn, value_fn=value, env=env, dynamics=env, start=start,
                                generator=torch.Generator().manual_seed(2))
        return Shac(ShacConfig(horizon=steps)).estimate(inp).loss

    return env, policy, loss_with


def independent(policy, rows):
    """The same split forward with two sets of *leaf* parameters: their autograd gradients are g_A, g_B."""
    leaves = [{n: p.detach().clone().requires_grad_(True) for n, p in policy.named_parameters()} for _ in range(2)]
    cut = rows // 2

    def policy_fn(obs, g):
        return torch.cat([functional_call(policy, leaves[0], (obs[:cut], g)),
                          functional_call(policy, leaves[1], (obs[cut:], g))])

    return leaves, policy_fn


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def test_one_backward_gives_each_halfs_gradient_and_their_sum():
    env, policy, loss_with = setup()
    split = HalfSplitPolicy(policy, lambda obs: obs, env.num_envs)
    loss_with(split).backward()
    g_a, g_b = split.gradients()
    leaves, policy_fn = independent(policy, env.num_envs)
    reference = torch.autograd.grad(loss_with(policy_fn), [*leaves[0].values(), *leaves[1].values()])
    half = len(leaves[0])
    torch.testing.assert_close(g_a, flat(reference[:half]), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_b, flat(reference[half:]), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(flat(p.grad for p in policy.parameters()), g_a + g_b, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(g_a, g_b)  # the halves differ, so the test can tell them apart
    expected = float(g_a @ g_b / (g_a.norm() * g_b.norm()))
    assert float(split.cosine()) == pytest.approx(expected, rel=1e-12)


def test_each_halfs_gradient_matches_central_differences():
    env, policy, loss_with = setup(rows=4, steps=3)
    split = HalfSplitPolicy(policy, lambda obs: obs, env.num_envs)
    loss_with(split).backward()
    g_a, _ = split.gradients()
    leaves, policy_fn = independent(policy, env.num_envs)
    names = list(leaves[0])
    h = 1e-6
    for name in names:
        tensor = leaves[0][name]
        offset = sum(leaves[0][n].numel() for n in names[:names.index(name)])
        for i in range(0, tensor.numel(), max(1, tensor.numel() // 3)):  # a few coordinates per tensor
            with torch.no_grad():
                original = tensor.view(-1)[i].item()
                tensor.view(-1)[i] = original + h
                up = loss_with(policy_fn).item()
                tensor.view(-1)[i] = original - h
                down = loss_with(policy_fn).item()
                tensor.view(-1)[i] = original
            assert g_a[offset + i].item() == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-9)


class CountingEnv(LinearEnv):
    """Counts the backward passes through its dynamics (one call per step and backward)."""

    backward_calls = 0

    def step(self, state, action, generator=None):
        env = self

        class Step(torch.autograd.Function):
            @staticmethod
            def forward(ctx, s, a):
                return LinearEnv.step(env, s, a)

            @staticmethod
            def backward(ctx, grad):
                env.backward_calls += 1
                return grad @ env.A, grad @ env.B

        return Step.apply(state, action)


@pytest.mark.parametrize("agreement", [False, True])
def test_agreement_adds_no_backward_pass(agreement):
    env = CountingEnv(num_envs=4, episode_length=50)
    scheduler = Agree(AgreeConfig(min_horizon=3, max_horizon=3)) if agreement else ModelFree(ModelFreeConfig())
    trainer = tiny_trainer(env, scheduler=scheduler, horizon=3, iterations=2)
    trainer.train()
    assert env.backward_calls == 2 * 3  # 2 iterations × 3 steps, one backward each
    rows = trainer.log.history[1:]
    if agreement:
        assert all(-1 <= r["grad/half_cosine"] <= 1 for r in rows)
    else:
        assert "grad/half_cosine" not in rows[0]


def test_the_agree_rule():
    scheduler = Agree(AgreeConfig(min_horizon=2, max_horizon=20, initial_horizon=8, smoothing=0.5,
                                  lengthen_above=0.5, shorten_below=0.2, growth=1.5, shrink=0.5))
    seen = [None, 0.9, 0.9, 0.4, 0.0, math.nan, 0.95]
    planned = []
    for i, cosine in enumerate(seen):
        metrics = {} if cosine is None else {mb.ACTOR_UPDATED: 1.0, "grad/half_cosine": cosine}
        planned.append(scheduler.plan(i, 10, metrics).horizon)
    # smoothed: 0.9 → 0.9 → 0.65 → 0.325 (stay) → NaN backs off → 0.6375
    assert planned == [8, 12, 18, 20, 20, 10, 15]
    state = scheduler.state_dict()
    clone = Agree(scheduler.config)
    clone.load_state_dict(state)
    assert clone.plan(7, 10, {"grad/half_cosine": 0.1, mb.ACTOR_UPDATED: 1.0}).horizon == \
        scheduler.plan(7, 10, {"grad/half_cosine": 0.1, mb.ACTOR_UPDATED: 1.0}).horizon


@pytest.mark.parametrize("bad, field", [
    ({"min_horizon": 9, "max_horizon": 4}, "max_horizon"),
    ({"lengthen_above": 0.2, "shorten_below": 0.3}, "shorten_below"),
    ({"initial_horizon": 64}, "initial_horizon"),
    ({"growth": 1.0}, "growth"),
    ({"shrink": 1.0}, "shrink"),
])
def test_bad_settings_fail_validation(bad, field):
    with pytest.raises(pydantic.ValidationError, match=field):
        AgreeConfig(**bad)


def test_one_env_has_no_two_halves():
    with pytest.raises(mb.UserError, match="env.num_envs = 1 has no two halves"):
        Trainer(LinearEnv(num_envs=1), Shac(ShacConfig()), Agree(AgreeConfig()), progress=False)
