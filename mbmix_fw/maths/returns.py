"""Discounted returns: TD(λ) critic targets (λ-returns over a window with episode boundaries).

The λ-return recursion itself lives in :mod:`.mix_returns` (MB-MIX's objective is the same recursion);
this module imports it, never the other way round.
"""
from __future__ import annotations

import torch

from .mix_returns import mixed_returns


def safe_values(value_fn, obs: torch.Tensor, bound: float | None = None) -> torch.Tensor:
    """``value_fn(obs)`` with value 0 where an observation is non-finite or diverged (DiffRL's rule).

    The critic never sees the broken rows (they are replaced by zeros before it runs), so neither its
    output nor the gradient flowing back through it to the policy turns NaN. ``bound`` is the env's
    ``diverged_magnitude`` (default :data:`mbmix_fw.maths.rollouts.DIVERGED_MAGNITUDE`, DiffRL's 1e6).
    """
    from .rollouts import DIVERGED_MAGNITUDE

    bound = DIVERGED_MAGNITUDE if bound is None else bound
    ok = (torch.isfinite(obs) & (obs.abs() <= bound)).all(-1)
    values = value_fn(torch.where(ok.unsqueeze(-1), obs, torch.zeros_like(obs)))
    return torch.where(ok, values, torch.zeros_like(values))


def lambda_returns(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """λ-returns ``G_t`` for every step of a window, all tensors ``[T, N]``.

    ``G_t = r_t + γ·[(1-λ)·V_{t+1} + λ·G_{t+1}]`` inside an episode;
    ``G_t = r_t + γ·V_{t+1}`` where the episode ends at ``t+1`` (``done``) or the window does.
    ``V_{t+1}`` is ``next_values`` with 0 at terminated states. Differentiable in every input, so the
    same function serves as critic target (on detached inputs) and as an actor objective.
    """
    return mixed_returns(rewards, next_values, terminated, done, gamma, lam, interval=1)
