"""SHAC's critic: a value network regressed on TD(λ) targets of the real windows, with a Polyak-averaged
target copy that the estimators bootstrap from.

Why its own role: the estimators read only :meth:`CriticLearner.target_value`; the trainer only asks for
one update per iteration. Targets, minibatches, guarded steps and the target copy stay here.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..contracts.rollout_types import Rollout
from ..contracts.scheduler import Plan
from ..contracts.settings import CriticSettings
from ..maths.returns import lambda_returns, safe_values
from .guard import DivergenceGuard
from .setup import Networks


class CriticLearner:
    """Fits ``networks.critic`` with ``optimizer`` and keeps ``networks.target_critic`` behind it.

    ``gamma`` is the estimator's discount (the critic must value the return the estimator bootstraps);
    ``diverged_magnitude`` the env's bound beyond which an observation counts as diverged.
    """

    def __init__(self, networks: Networks, optimizer: torch.optim.Optimizer, settings: CriticSettings,
                 gamma: float, diverged_magnitude: float, guard: DivergenceGuard, generator: torch.Generator):
        self.networks, self.optimizer, self.settings = networks, optimizer, settings
        self.gamma, self.diverged_magnitude = gamma, diverged_magnitude
        self.guard, self.generator = guard, generator

    def target_value(self, obs: torch.Tensor) -> torch.Tensor:
        """The target critic's value of raw observations; 0 where they are non-finite or diverged."""
        target, normalize = self.networks.target_critic, self.networks.normalize
        return safe_values(lambda o: target(normalize(o)), obs, self.diverged_magnitude)

    def targets(self, rollouts: list[Rollout]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised observations, TD(λ) targets and a validity mask, flattened over every rollout.

        Targets bootstrap from the *target* critic; termination bootstraps 0, truncation keeps
        ``V(obs_before_reset)``. A non-finite transition (which the rollout ended as a termination) has
        its reward read as 0 and is left out of the regression (mask False).
        """
        gamma, td_lambda = self.gamma, self.settings.td_lambda
        obs_all, target_all, valid_all = [], [], []
        with torch.no_grad():
            for r in rollouts:
                finite = r.finite
                next_values = self.target_value(r.next_obs.detach())
                rewards = torch.where(finite, r.rewards.detach(), torch.zeros_like(r.rewards.detach()))
                targets = lambda_returns(rewards, next_values, r.terminated, r.done, gamma, td_lambda)
                obs = torch.where(finite.unsqueeze(-1), r.obs.detach(), torch.zeros_like(r.obs.detach()))
                obs_all.append(self.networks.normalize(obs).reshape(-1, r.obs.shape[-1]))
                target_all.append(targets.reshape(-1))
                valid_all.append(finite.reshape(-1))
        return torch.cat(obs_all), torch.cat(target_all), torch.cat(valid_all)

    def update(self, rollouts: list[Rollout], plan: Plan) -> torch.Tensor:
        """Regress V on TD(λ) targets in minibatches (ours are reshuffled every pass; DiffRL's
        ``CriticDataset`` keeps the rollout order), then move the target copy. Returns the mean loss (a
        device scalar)."""
        loss = self._regress(rollouts, plan)
        self._polyak_target()
        return loss

    def _regress(self, rollouts: list[Rollout], plan: Plan) -> torch.Tensor:
        cfg, critic = self.settings, self.networks.critic
        obs, targets, valid = self.targets(rollouts)
        weight = valid.to(obs.dtype)
        iterations = plan.critic_iterations if plan.critic_iterations is not None else cfg.iterations
        batch = math.ceil(obs.shape[0] / cfg.minibatches)
        total, count = torch.zeros((), device=obs.device, dtype=obs.dtype), 0
        for _ in range(iterations):
            order = torch.randperm(obs.shape[0], generator=self.generator, device=obs.device)
            for chunk in order.split(batch):
                w = weight[chunk]
                error = torch.where(w > 0, critic(obs[chunk]) - targets[chunk], torch.zeros_like(w))
                loss = error.pow(2).sum() / w.sum().clamp_min(1.0)
                self.guard.step(loss, critic, self.optimizer, "critic", empty=w.sum() == 0)
                total, count = total + loss.detach(), count + 1
        return total / count if count else torch.full((), float("nan"), device=obs.device)

    @torch.no_grad()
    def _polyak_target(self) -> None:
        """``target ← (1-τ)·target + τ·critic`` (τ = ``critic.tau``, the online net's weight)."""
        tau = self.settings.tau
        for target, online in zip(self.networks.target_critic.parameters(), self.networks.critic.parameters()):
            target.lerp_(online, tau)

    def state_entries(self) -> dict[str, Any]:
        """What the checkpoint keeps of the critic: both networks and the optimiser."""
        return {"critic": self.networks.critic.state_dict(),
                "target_critic": self.networks.target_critic.state_dict(),
                "critic_opt": self.optimizer.state_dict()}

    def load_state_entries(self, state: dict[str, Any]) -> None:
        self.networks.critic.load_state_dict(state["critic"])
        self.networks.target_critic.load_state_dict(state["target_critic"])
        self.optimizer.load_state_dict(state["critic_opt"])
