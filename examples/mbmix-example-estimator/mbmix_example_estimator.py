"""A uniform mixture of truncated windows as an mbmix-fw estimator plugin (kind ``uniform_mix``).

SHAC maximises one window objective ``J_H = Σ_{h<H} γ^h r_h + γ^H V(s_H)``; MB-MIX mixes every
``J_h, h = 1 … H`` with geometric weights. This estimator mixes them with *equal* weights::

    J^unif = (1/H) Σ_{h=1}^{H} J_h

One rollout of ``H`` steps contains every ``J_h``: after step ``t`` of a segment the running discounted
reward plus ``γ^{t+1} V_boot(s_{t+1})`` is exactly the objective of the window that stops there. An
episode that ends inside the window closes a segment (its bootstrap is 0 after a termination and
``V(obs_before_reset)`` after a truncation), and the next segment starts afresh, as in SHAC.
The loss is ``-(Σ over segments of J^unif) / (H·N)``, normalised like SHAC's.

Only ``import mbmix_fw as mb`` is used: the rollout (``mb.rollout``), the bootstrap rule
(``mb.bootstrap_values``) and the ``mb.EstimatorInput`` / ``mb.Estimate`` contract.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import mbmix_fw as mb


class UniformMixConfig(mb.EstimatorConfig):
    """Equal-weight mixture of the truncated windows ``J_1 … J_H``."""

    kind: Literal["uniform_mix"] = "uniform_mix"
    horizon: int = Field(16, ge=1)
    """Longest window H: steps rolled out and differentiated per policy update."""
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    """Discount, shared with the critic's TD(λ) targets."""


def uniform_mix_objective(rewards: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
                          done: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per env (``[N]``), the sum over the window's segments of ``(1/L) Σ_{h=1}^{L} J_h``.

    All inputs are ``[T, N]`` as in ``mb.Rollout``; ``next_values`` is ``V(s_{t+1})`` before any reset.
    """
    boot = mb.bootstrap_values(next_values, terminated)
    steps = rewards.shape[0]
    zeros = torch.zeros_like(rewards[0])
    reward_sum, discount, objective_sum, count, total = zeros, torch.ones_like(zeros), zeros, zeros, zeros
    for t in range(steps):
        reward_sum = reward_sum + discount * rewards[t]
        discount = discount * gamma
        objective_sum = objective_sum + reward_sum + discount * boot[t]  # J_h of the window ending here
        count = count + 1
        ends = done[t] if t < steps - 1 else torch.ones_like(done[t])
        total = total + torch.where(ends, objective_sum / count, zeros)
        fresh = done[t]  # the next step starts a new segment
        reward_sum = torch.where(fresh, zeros, reward_sum)
        discount = torch.where(fresh, torch.ones_like(discount), discount)
        objective_sum = torch.where(fresh, zeros, objective_sum)
        count = torch.where(fresh, zeros, count)
    return total


class UniformMix(mb.GradientEstimator):
    uses_critic = True  # bootstraps with the target critic, so the trainer trains one

    def __init__(self, config: UniformMixConfig, ctx: mb.BuildContext | None = None):
        self.config = config
        self.gamma = config.gamma

    def horizon(self, env: mb.DiffEnv) -> int:
        return self.config.horizon

    def estimate(self, inp: mb.EstimatorInput) -> mb.Estimate:
        window = mb.rollout(inp.policy_fn, inp.env, inp.dynamics, inp.start, self.config.horizon, inp.generator)
        next_values = inp.value_fn(window.next_obs)  # [T, N]
        per_env = uniform_mix_objective(window.rewards, next_values, window.terminated, window.done, self.gamma)
        loss = mb.masked_actor_loss(per_env, window, inp.env)  # -Σ/(T·N) over the envs that did not diverge
        return mb.Estimate(loss, window, {"estimator/objective": float(-loss.detach())})


@mb.hookimpl
def register_estimators(register):
    register(UniformMixConfig, UniformMix)
