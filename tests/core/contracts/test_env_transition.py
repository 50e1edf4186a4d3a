"""``DiffEnv.transition`` / ``DiffEnv.score``: the fused step the rollout calls, and its defaults."""
from __future__ import annotations

import torch

import mbmix_fw as mb
from mbmix_fw.testing import LinearEnv


class CountingEnv(LinearEnv):
    """LinearEnv that counts its calls and whose fused methods tag the reward, so a test sees which
    path the rollout took."""

    def __init__(self):
        super().__init__(num_envs=4, episode_length=3)
        self.calls = {"step": 0, "transition": 0, "score": 0}

    def step(self, state, action, generator=None):
        self.calls["step"] += 1
        return super().step(state, action, generator)

    def transition(self, state, action, generator=None):
        self.calls["transition"] += 1
        out = super().transition(state, action, generator)
        return mb.Transition(out.next_state, out.reward + 1000.0, out.terminated, out.next_obs)

    def score(self, state, action, next_state):
        self.calls["score"] += 1
        return super().score(state, action, next_state)


class Doubler:
    """A stand-in world model: any object with the env's ``step`` signature."""

    def step(self, state, action, generator=None):
        return 2.0 * state


def policy_fn(obs, generator):
    return torch.tanh(obs[:, :2])


def test_default_transition_agrees_with_the_separate_methods():
    env = LinearEnv(num_envs=5)
    g = torch.Generator().manual_seed(0)
    state, action = env.reset(5, g), torch.rand(5, env.action_dim, generator=g) * 2 - 1
    out = env.transition(state, action)
    nxt = env.step(state, action)
    torch.testing.assert_close(out.next_state, nxt)
    torch.testing.assert_close(out.reward, env.reward(state, action, nxt))
    torch.testing.assert_close(out.next_obs, env.observe(nxt))
    assert torch.equal(out.terminated, env.terminated(nxt))


def test_rollout_through_the_env_uses_its_fused_transition():
    env = CountingEnv()
    start = mb.Cursor(env.reset(4), torch.zeros(4, dtype=torch.long))
    r = mb.rollout(policy_fn, env, env, start, steps=5)
    assert env.calls["transition"] == 5 and env.calls["score"] == 5  # default transition scores once
    assert bool((r.rewards > 500).all()), "rewards must come from the fused transition"


def test_rollout_through_a_model_scores_its_predictions_with_the_env():
    env = CountingEnv()
    start = mb.Cursor(env.reset(4), None)
    r = mb.rollout(policy_fn, env, Doubler(), start, steps=4)
    assert env.calls == {"step": 0, "transition": 0, "score": 4}
    torch.testing.assert_close(r.next_states[0], 2.0 * r.states[0])
    torch.testing.assert_close(r.rewards[0], env.reward(r.states[0], r.actions[0], r.next_states[0]))
    torch.testing.assert_close(r.next_obs[0], env.observe(r.next_states[0]))


class TaggedObsEnv(LinearEnv):
    """LinearEnv whose transition returns a tagged observation (+100), so a test sees where the policy's
    observation came from: the transition (tagged) or ``observe`` (untagged)."""

    def __init__(self):
        super().__init__(num_envs=4, episode_length=3)
        self.observed = 0

    def observe(self, state):
        self.observed += 1
        return super().observe(state)

    def transition(self, state, action, generator=None):
        out = super().transition(state, action, generator)
        return mb.Transition(out.next_state, out.reward, out.terminated, out.next_obs + 100.0)


def test_the_policy_sees_the_transitions_observation_and_fresh_rows_are_observed():
    env = TaggedObsEnv()
    start = mb.Cursor(env.reset(4).requires_grad_(True), torch.zeros(4, dtype=torch.long))
    r = mb.rollout(policy_fn, env, env, start, steps=5)
    assert torch.equal(r.truncated[2], torch.ones(4, dtype=torch.bool))  # every episode ends after step 2
    for t in (1, 2, 4):  # continuing rows: the previous transition's observation, graph included
        assert r.obs[t] is not None and torch.equal(r.obs[t], r.next_obs[t - 1])
    assert bool((r.obs[1] > 50).all())
    torch.testing.assert_close(r.obs[3], env.observe(r.states[3]))  # reset rows: their own observation
    assert bool((r.obs[3] < 50).all())
    (grad,) = torch.autograd.grad(r.obs[2].sum(), start.state)
    assert grad.abs().sum() > 0  # the reused observation keeps its history back to the start
