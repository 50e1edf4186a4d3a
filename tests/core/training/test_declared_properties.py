"""Where the loop branches on what a component is, it reads a declaration, never identity or guesswork: the
rollout's fused step (``Dynamics.is_simulator``), an estimator's fresh episodes (``Estimate.fresh_episodes``)
and whether a policy update ran (the ``grad/actor_updated`` metric ``agree`` reads). Each test fails when the
declaration is ignored for what it replaced."""
from __future__ import annotations

import pytest
import torch

import mbmix_fw as mb
from mbmix_estimators import Bptt, BpttConfig, Shac, ShacConfig
from mbmix_fw.maths.adjoint_tap import AdjointTap
from mbmix_fw.testing import LinearEnv
from mbmix_fw.training.trainer import Trainer
from mbmix_schedulers import Agree, AgreeConfig, ModelFree, ModelFreeConfig

TAG = 1000.0


class FusedEnv(LinearEnv):
    """Counts its calls; its fused ``transition`` tags the reward, so a test sees which path the rollout took."""

    def __init__(self, **kwargs):
        super().__init__(num_envs=4, episode_length=3, **kwargs)
        self.calls = {"transition": 0, "score": 0}

    def transition(self, state, action, generator=None):
        self.calls["transition"] += 1
        out = super().transition(state, action, generator)
        return mb.Transition(out.next_state, out.reward + TAG, out.terminated, out.next_obs)

    def score(self, state, action, next_state):
        self.calls["score"] += 1
        return super().score(state, action, next_state)


class SimulatorProxy:
    """Not the env object, but declares that its step is the env's simulator step, unchanged."""

    is_simulator = True

    def __init__(self, env):
        self.env = env

    def step(self, state, action, generator=None):
        return self.env.step(state, action, generator)


def roll(env, dynamics, steps=4):
    start = mb.Cursor(env.reset(4, torch.Generator().manual_seed(0)), None)
    return mb.rollout(lambda obs, g: torch.tanh(obs[:, :2]), env, dynamics, start, steps)


def test_a_dynamics_declaring_the_simulator_is_stepped_with_the_fused_transition():
    env = FusedEnv()
    window = roll(env, SimulatorProxy(env))
    assert env.calls["transition"] == 4 and bool((window.rewards > TAG / 2).all())


def test_an_env_declaring_itself_no_simulator_is_scored_step_by_step_even_as_its_own_dynamics():
    env = FusedEnv()
    env.is_simulator = False
    window = roll(env, env)
    assert env.calls == {"transition": 0, "score": 4} and bool((window.rewards < TAG / 2).all())


def test_the_adjoint_tap_declares_it_acts_on_the_step():
    env = FusedEnv()
    roll(env, AdjointTap().wrap(env))
    assert env.calls == {"transition": 0, "score": 4}


def test_bptt_declares_the_windows_that_start_fresh_episodes():
    env = LinearEnv(num_envs=4, episode_length=3)
    policy = mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, hidden=(8,))

    def estimate(config, t):
        start = mb.Cursor(env.reset(4), t)
        inp = mb.EstimatorInput(policy_fn=policy, value_fn=None, env=env, dynamics=env, start=start)
        return Bptt(config).estimate(inp).fresh_episodes

    assert estimate(BpttConfig(), torch.zeros(4, dtype=torch.long))  # whole episodes: fresh resets
    assert not estimate(BpttConfig(horizon=2), torch.zeros(4, dtype=torch.long))  # truncated: carries on
    assert not estimate(BpttConfig(), None)  # a model branch from buffer states


@pytest.mark.parametrize("estimator, fresh", [(Bptt(BpttConfig()), True), (Shac(ShacConfig(horizon=3)), False)])
def test_the_trainer_counts_returns_from_zero_only_where_the_estimator_declares_fresh_episodes(estimator, fresh):
    env = LinearEnv(num_envs=4, episode_length=3)  # every 3-step window ends every episode
    trainer = Trainer(env, estimator, ModelFree(ModelFreeConfig()), run=mb.RunSettings(iterations=1, eval_envs=2),
                      critic=mb.CriticSettings(iterations=1), progress=False)
    windows = []
    real = estimator.estimate
    estimator.estimate = lambda inp: (windows.append(real(inp)), windows[-1])[1]
    leftover = 100.0  # partial returns of the episodes the cursor carries
    trainer.episodes.running = torch.full((4,), leftover)
    row = trainer._read_metrics(trainer._iterate(trainer.scheduler.plan(0, 1)))
    returns = windows[0].rollout.rewards.detach().sum(0)
    expected = returns.mean() if fresh else (returns + leftover).mean()
    assert row["train/return"] == pytest.approx(float(expected), rel=1e-6)


def test_agree_updates_when_the_trainer_says_an_update_ran_not_when_keys_are_present():
    config = AgreeConfig(min_horizon=2, max_horizon=32, initial_horizon=8, smoothing=0.0)
    agreed = {"grad/actor_norm": 1.0, "grad/half_cosine": 0.9, "loss/actor": 0.0}
    scheduler = Agree(config)
    assert scheduler.plan(1, 10, {**agreed, mb.ACTOR_UPDATED: 0.0}).horizon == 8  # no update: H stays
    assert scheduler.plan(2, 10, {mb.ACTOR_UPDATED: 1.0}).horizon == 4  # an update without a cosine: back off
    assert scheduler.plan(3, 10, {**agreed, mb.ACTOR_UPDATED: 1.0}).horizon == 5  # agreement: 4 × 1.25


class NoPolicyUpdate(mb.Scheduler):
    """Plans β = 0 and no model branch: the actor loss has no term, so no policy update runs."""

    def plan(self, iteration, total, metrics=mb.NO_METRICS):
        return mb.Plan(env_weight=0.0 if iteration == 1 else 1.0)


def test_the_trainer_logs_whether_a_policy_update_ran():
    trainer = Trainer(LinearEnv(num_envs=4, episode_length=8), Shac(ShacConfig(horizon=2)), NoPolicyUpdate(),
                      run=mb.RunSettings(iterations=3, eval_envs=2), critic=mb.CriticSettings(iterations=1),
                      progress=False)
    trainer.train()
    rows = trainer.log.history[1:]
    assert [row[mb.ACTOR_UPDATED] for row in rows] == [1.0, 0.0, 1.0]
    assert "grad/actor_norm" not in rows[1]
