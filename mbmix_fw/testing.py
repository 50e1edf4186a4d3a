"""Helpers for plugin authors' tests: a tiny linear env and contract checks."""
from __future__ import annotations

import torch

from .context import BuildContext
from .env import DiffEnv


class LinearEnv(DiffEnv):
    """``s' = A s + B a`` with reward ``-(|s|² + 0.1|a|²)``: small, exact, differentiable.

    Tests use it wherever a real plugin env would add nothing but time.
    """

    def __init__(self, state_dim: int = 3, action_dim: int = 2, num_envs: int = 8,
                 episode_length: int = 20, ctx: BuildContext | None = None, seed: int = 0):
        ctx = ctx or BuildContext.cpu()
        g = torch.Generator().manual_seed(seed)
        self.A = (torch.eye(state_dim) + 0.1 * torch.randn(state_dim, state_dim, generator=g)).to(ctx.device)
        self.B = (0.5 * torch.randn(state_dim, action_dim, generator=g)).to(ctx.device)
        self.num_envs, self.state_dim, self.obs_dim = num_envs, state_dim, state_dim
        self.action_dim, self.episode_length, self.device = action_dim, episode_length, ctx.device

    def reset(self, n, generator=None):
        return torch.randn(n, self.state_dim, generator=generator, device=self.device)

    def step(self, state, action, generator=None):
        return state @ self.A.T + action @ self.B.T

    def reward(self, state, action, next_state):
        return -(next_state.pow(2).sum(-1) + 0.1 * action.pow(2).sum(-1))

    def observe(self, state):
        return state
