"""check_env catches each kind of contract violation it promises to catch."""
from __future__ import annotations

import pytest
import torch

from mbmix_fw.testing import LinearEnv, check_env


class Detached(LinearEnv):
    def step(self, state, action, generator=None):
        return super().step(state, action, generator).detach()


class WrongRewardShape(LinearEnv):
    def reward(self, state, action, next_state):
        return super().reward(state, action, next_state).unsqueeze(-1)


class GlobalRngReset(LinearEnv):
    def reset(self, n, generator=None):
        return torch.randn(n, self.state_dim, device=self.device)


class BatchDependentObs(LinearEnv):
    def observe(self, state):
        return state - state.mean(0)


class Float32Only(LinearEnv):
    def observe(self, state):
        return state.float()


class _WrongBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.pow(3)

    @staticmethod
    def backward(ctx, grad):
        return grad * 3.0  # should be 3x²


class WrongGradient(LinearEnv):
    def reward(self, state, action, next_state):
        return super().reward(state, action, next_state) + _WrongBackward.apply(state).sum(-1)


class NoisyWithoutReplay(LinearEnv):
    def step(self, state, action, generator=None):
        return super().step(state, action) + 0.1 * torch.randn_like(state)


@pytest.mark.parametrize("env_cls, message", [
    (Detached, "step has no autograd graph"),
    (WrongRewardShape, "reward must have shape"),
    (GlobalRngReset, "reset(n, generator) must give the same states"),
    (BatchDependentObs, "observe of rows"),
    (Float32Only, "observe must keep the input dtype"),
    (WrongGradient, "reward: autograd directional derivative"),
    (NoisyWithoutReplay, "step must replay exactly"),
])
def test_check_env_reports_the_violation(env_cls, message):
    with pytest.raises(AssertionError) as info:
        check_env(env_cls())
    assert message in str(info.value)


def test_check_env_passes_a_correct_env():
    check_env(LinearEnv(state_dim=4, action_dim=3, episode_length=5))
