"""The toy envs keep the DiffEnv contract (check_env), register through the plugin hook, and the
pendulum reproduces gym's Pendulum-v1 (dynamics constants and reward scale)."""
from __future__ import annotations

import math

import pytest
import torch

import mbmix_fw as mb
import mbmix_toy
from mbmix_fw.testing import LinearEnv, check_env
from mbmix_toy import LQR, LQRConfig, Pendulum, PendulumConfig, TabularMDP, TabularMDPConfig
from mbmix_toy.pendulum import angle_normalize, smooth_limit


@pytest.mark.parametrize("make, surrogate", [
    (lambda: LinearEnv(), False),
    (lambda: Pendulum(PendulumConfig()), False),
    (lambda: Pendulum(PendulumConfig(speed_limit_width=0.0)), False),
    (lambda: LQR(LQRConfig()), False),
    (lambda: LQR(LQRConfig(state_dim=6, action_dim=1, noise_std=0.0)), False),
    (lambda: TabularMDP(TabularMDPConfig()), True),
    (lambda: TabularMDP(TabularMDPConfig(relaxation="straight_through")), True),
], ids=["linear", "pendulum", "pendulum_hard_clamp", "lqr", "lqr_noise_free", "mdp_score", "mdp_straight_through"])
def test_env_keeps_the_contract(make, surrogate):
    check_env(make(), surrogate_step=surrogate)


def test_plugin_registers_all_four_envs():
    registered = {}
    mbmix_toy.register_envs(lambda config_cls, factory: registered.setdefault(config_cls.model_fields["kind"].default, (config_cls, factory)))
    assert set(registered) == {"pendulum", "lqr", "tabular_mdp", "wall_push"}
    for config_cls, factory in registered.values():
        assert issubclass(config_cls, mb.EnvConfig)
        env = factory(config_cls(), mb.BuildContext.cpu())
        assert isinstance(env, mb.DiffEnv) and env.num_envs == 64


def test_envs_follow_the_context_dtype():
    ctx = mb.BuildContext(dtype=torch.float64)
    for env in (Pendulum(PendulumConfig(), ctx), LQR(LQRConfig(), ctx), TabularMDP(TabularMDPConfig(), ctx)):
        assert env.reset(3).dtype == torch.float64


def test_pendulum_matches_gym_update():
    env = Pendulum(PendulumConfig(speed_limit_width=0.0))
    state = torch.tensor([[0.0, 0.0], [math.pi / 2, 1.0], [0.1, 7.9]])
    action = torch.tensor([[1.0], [-0.5], [1.0]])
    nxt = env.step(state, action)
    # gym: thdot' = clip(thdot + (3g/(2l) sin th + 3/(m l^2) u) dt, -8, 8); th' = th + thdot' dt
    speed = [0.0 + 6.0 * 0.05, 1.0 + (15.0 - 3.0) * 0.05, 8.0]
    expected = torch.tensor([[s * 0.05 + th, s] for th, s in zip([0.0, math.pi / 2, 0.1], speed)])
    torch.testing.assert_close(nxt, expected)
    reward = env.reward(state, action, nxt)
    torch.testing.assert_close(reward[1], torch.tensor(-((math.pi / 2) ** 2 + 0.1 * 1.0 + 0.001 * 1.0)))


def test_smooth_speed_limit_is_near_clamp_and_keeps_gradient():
    x = torch.linspace(-12, 12, 241, requires_grad=True)
    soft = smooth_limit(x, 8.0, 0.25)
    inside = x.detach().abs() <= 6.0
    torch.testing.assert_close(soft[inside], x[inside], atol=2e-4, rtol=0)
    assert float((soft.detach().abs() - 8.0).max()) <= 0.25 * math.log(2) + 1e-6
    (grad,) = torch.autograd.grad(soft.sum(), x)
    assert (grad > 0).all()  # the hard clamp's gradient is 0 for |x| > 8


def test_angle_normalize_wraps_with_unit_gradient():
    theta = torch.tensor([0.5, math.pi - 0.1, math.pi + 0.1, -7.0], requires_grad=True)
    wrapped = angle_normalize(theta)
    torch.testing.assert_close(wrapped.detach(), torch.tensor([0.5, math.pi - 0.1, -math.pi + 0.1, -7.0 + 2 * math.pi]))
    (grad,) = torch.autograd.grad(wrapped.sum(), theta)
    torch.testing.assert_close(grad, torch.ones(4))


def _episode_return(env, policy_fn, n=256, seed=0) -> float:
    generator = torch.Generator().manual_seed(seed)
    start = mb.Cursor(env.reset(n, generator), torch.zeros(n, dtype=torch.long))
    with torch.no_grad():
        out = mb.rollout(policy_fn, env, env, start, env.episode_length, generator)
    assert out.truncated[-1].all()
    return float(out.rewards.sum(0).mean())


def energy_swing_up(obs, generator=None):
    """Pump energy towards the upright level, then balance with a PD law: a known-good controller."""
    cos, sin, speed = obs.unbind(-1)
    energy = speed.pow(2) / 6 + 5 * (cos - 1)  # kinetic (I = 1/3) + potential, 0 at rest upright
    pump = torch.sign(-energy * speed)
    balance = -(10 * torch.atan2(sin, cos) + 2 * speed) / 2
    return torch.where(cos > 0.85, balance, pump).clamp(-1, 1).unsqueeze(-1)


def test_pendulum_reward_scale_matches_gym():
    env = Pendulum(PendulumConfig())
    random_return = _episode_return(env, lambda obs, g: 2 * torch.rand(obs.shape[0], 1, generator=g) - 1)
    assert -1500 < random_return < -1000
    assert -300 < _episode_return(env, energy_swing_up) < -100
