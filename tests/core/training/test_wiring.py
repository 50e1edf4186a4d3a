"""The SHAC wiring of the trainer, line by line: target critic for bootstrapping, Polyak direction,
truncation vs termination in the critic's TD(λ) targets (against a plain-Python reference at every
step), the observation normaliser's update and the masked critic loss."""
from __future__ import annotations

import pytest
import torch

import mbmix_fw as mb
from mbmix_estimators import Shac, ShacConfig
from mbmix_fw.testing import LinearEnv, tiny_trainer

GAMMA, LAM = 0.9, 0.7


def make_trainer(num_envs=3, **critic):
    return tiny_trainer(LinearEnv(state_dim=2, num_envs=num_envs, episode_length=50),
                        Shac(ShacConfig(horizon=4, gamma=GAMMA)), critic={"minibatches": 1, "td_lambda": LAM, **critic})


def perturb(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g))


def test_the_actor_bootstraps_with_the_target_critic():
    trainer = make_trainer()
    perturb(trainer.critic)  # online and target critics now differ
    obs = torch.randn(5, 2)
    values = trainer._estimator_input(trainer.env, trainer.cursor).value_fn(obs)
    normalized = trainer.obs_norm.normalize(obs)
    assert torch.allclose(values, trainer.target_critic(normalized))
    assert not torch.allclose(values, trainer.critic(normalized), atol=1e-3)


def test_polyak_moves_the_target_by_tau_towards_the_online_critic():
    trainer = make_trainer(tau=0.8)
    with torch.no_grad():
        for p in trainer.critic.parameters():
            p.fill_(1.0)
        for p in trainer.target_critic.parameters():
            p.fill_(0.0)
    trainer.critic_update._polyak_target()
    assert all(torch.allclose(p, torch.full_like(p, 0.8)) for p in trainer.target_critic.parameters())
    assert all(torch.equal(p, torch.ones_like(p)) for p in trainer.critic.parameters())


def hand_made_rollout():
    """T = 4, N = 3: env 0 terminates after step 1, env 1 is truncated after step 2, env 2 runs through."""
    T, N = 4, 3
    g = torch.Generator().manual_seed(3)
    terminated = torch.zeros(T, N, dtype=torch.bool)
    truncated = torch.zeros(T, N, dtype=torch.bool)
    terminated[1, 0] = True
    truncated[2, 1] = True
    states = torch.randn(T, N, 2, generator=g)
    next_states = torch.randn(T, N, 2, generator=g)
    return mb.Rollout(
        obs=states, actions=torch.zeros(T, N, 2), rewards=torch.randn(T, N, generator=g),
        next_obs=next_states, terminated=terminated, truncated=truncated, states=states,
        next_states=next_states, end=mb.Cursor(next_states[-1], torch.zeros(N, dtype=torch.long)),
    )


def reference_td_lambda(rewards, values, terminated, truncated, gamma, lam):
    """Plain Python: G_t = r_t + γ[(1-λ)V_{t+1} + λG_{t+1}]; at an episode end r_t + γ·(0 if terminated
    else V(obs_before_reset)); at the window end r_t + γ·V_{t+1}."""
    T, N = len(rewards), len(rewards[0])
    out = [[0.0] * N for _ in range(T)]
    for n in range(N):
        following = None
        for t in reversed(range(T)):
            boot = 0.0 if terminated[t][n] else values[t][n]
            if terminated[t][n] or truncated[t][n] or t == T - 1:
                g = rewards[t][n] + gamma * boot
            else:
                g = rewards[t][n] + gamma * ((1 - lam) * boot + lam * following)
            out[t][n] = following = g
    return out


def test_critic_targets_match_a_plain_python_td_lambda_at_every_step():
    trainer = make_trainer()
    perturb(trainer.target_critic)  # nonzero, distinct values everywhere
    r = hand_made_rollout()
    obs, targets, valid = trainer.critic_update.targets([r])
    with torch.no_grad():
        values = trainer.target_critic(trainer.obs_norm.normalize(r.next_obs)).tolist()
    expected = reference_td_lambda(r.rewards.tolist(), values, r.terminated.tolist(), r.truncated.tolist(),
                                   GAMMA, LAM)
    assert torch.allclose(targets, torch.tensor(expected).reshape(-1), atol=1e-6)
    assert valid.all() and torch.allclose(obs, trainer.obs_norm.normalize(r.obs).reshape(-1, 2))


def test_the_critic_loss_leaves_out_nonfinite_transitions():
    trainer = make_trainer()
    r = hand_made_rollout()
    broken = r.next_obs.clone()
    broken[0, 2] = float("nan")
    r = mb.Rollout(**{**{k: getattr(r, k) for k in ("obs", "actions", "rewards", "terminated", "truncated",
                                                   "states", "next_states", "end")}, "next_obs": broken})
    obs, targets, valid = trainer.critic_update.targets([r])
    assert valid.tolist() == [i != 2 for i in range(12)]
    with torch.no_grad():
        expected = (trainer.critic(obs[valid]) - targets[valid]).pow(2).mean()
    loss = trainer.critic_update.update([r], mb.Plan())  # one minibatch: the loss before its step
    assert torch.isfinite(targets).all() and torch.allclose(loss, expected)


def test_the_observation_normaliser_is_updated_with_each_window():
    trainer = make_trainer()
    windows = []
    estimate = trainer.estimator.estimate

    def recording(inp):
        out = estimate(inp)
        windows.append(out.rollout.obs.detach().reshape(-1, 2).double())
        return out

    trainer.estimator.estimate = recording
    for i in range(2):
        trainer._read_metrics(trainer._iterate(trainer.scheduler.plan(i, 4)))
    seen = torch.cat(windows)
    norm = trainer.obs_norm
    assert norm.count.item() == pytest.approx(1e-5 + seen.shape[0])
    assert torch.allclose(norm.mean, seen.mean(0) * seen.shape[0] / (seen.shape[0] + 1e-5))
    assert torch.allclose(norm.var, seen.var(0, unbiased=False), rtol=1e-4)
