"""Evaluation: full episodes of the deterministic policy from a fixed set of initial states.

Why its own generator: every evaluation of a run sees the same initial states (so two evaluations differ
only by the policy), and evaluating never perturbs training's random stream.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..contracts.env import DiffEnv

EVAL_SEED_OFFSET = 1_000_003
"""The evaluation generator's seed is ``run.seed`` plus this: far from the seeds of other runs."""


class Evaluator:
    """Runs ``episodes`` (default ``eval_envs``) episodes of ``policy`` in ``env`` in parallel."""

    def __init__(self, env: DiffEnv, policy: torch.nn.Module, normalize: Callable[[torch.Tensor], torch.Tensor],
                 seed: int, eval_envs: int, device: torch.device):
        self.env, self.policy, self.normalize = env, policy, normalize
        self.seed, self.eval_envs, self.device = seed, eval_envs, device

    @torch.no_grad()
    def metrics(self) -> dict[str, float]:
        """``eval/return``: the mean undiscounted return of the finite ones of ``eval_envs`` full episodes
        (:meth:`returns`; NaN when none is finite), and ``eval/nonfinite_episodes``: how many were left out.
        One diverged cloth must not turn a run's score into NaN; it is counted instead."""
        returns = self.returns()
        finite = torch.isfinite(returns)
        kept = int(finite.sum())
        mean = float(returns[finite].mean()) if kept else float("nan")
        return {"eval/return": mean, "eval/nonfinite_episodes": float(returns.numel() - kept)}

    def mean_return(self) -> float:
        """``eval/return`` of :meth:`metrics`."""
        return self.metrics()["eval/return"]

    @torch.no_grad()
    def returns(self, episodes: int | None = None) -> torch.Tensor:
        """Undiscounted returns ``[episodes]`` of full episodes, run in parallel with the deterministic
        policy; an env's return stops accumulating once it terminates."""
        g = torch.Generator(device=self.device).manual_seed(self.seed + EVAL_SEED_OFFSET)
        state = self.env.reset(self.eval_envs if episodes is None else episodes, g)
        alive = torch.ones(state.shape[0], dtype=torch.bool, device=self.device)
        total = torch.zeros(state.shape[0], device=self.device)
        for _ in range(self.env.episode_length):
            action = self.policy(self.normalize(self.env.observe(state)), deterministic=True)
            next_state = self.env.step(state, action, g)
            total += torch.where(alive, self.env.reward(state, action, next_state), torch.zeros_like(total))
            alive &= ~self.env.terminated(next_state)
            state = next_state
            if not bool(alive.any()):
                break
        return total
