"""SHAC's actor objective (Xu et al., "Accelerated Policy Learning with Parallel Differentiable
Simulation", ICLR 2022; method.md §1.3(a)).

From the batch's current states (the cursor the trainer carries between windows) roll ``H`` steps
through the differentiable dynamics and maximise, per episode segment of ``L ≤ H`` steps,

    J_L = Σ_{h<L} γ^h r_h + γ^L V_boot(s_L)

with ``V_boot`` the target critic, 0 after a termination and ``V(obs_before_reset)`` after a
time-limit truncation or at the window end. An episode that ends inside the window starts a fresh
segment (SHAC resets its reward accumulator and discount per env on ``done``). The loss is

    loss = -(Σ over segments of J_L) / (H·N)

exactly SHAC's normalisation. The sum itself is :func:`mbmix_fw.shac_objective`.

``H`` is ``horizon`` from the config unless this iteration's plan sets one (``EstimatorInput.horizon``,
any length in ``[1, MAX_STEPS]``: a window may span several episodes). An env whose window
diverged (a non-finite or out-of-bound transition) is left out of the sum and of ``N``
(:func:`mbmix_fw.masked_actor_loss`, used by every built-in estimator), so the others still train.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

import mbmix_fw as mb

if TYPE_CHECKING:
    from . import ShacConfig


class Shac(mb.GradientEstimator):
    uses_critic = True

    def __init__(self, config: "ShacConfig", ctx: mb.BuildContext | None = None):
        self.config = config
        self.gamma = config.gamma

    def horizon(self, env: mb.DiffEnv) -> int:
        return self.config.horizon

    def horizon_bounds(self, env: mb.DiffEnv) -> tuple[int, int]:
        return 1, mb.MAX_STEPS

    def estimate(self, inp: mb.EstimatorInput) -> mb.Estimate:
        horizon = inp.horizon if inp.horizon is not None else self.config.horizon
        window = mb.rollout(inp.policy_fn, inp.env, inp.dynamics, inp.start, horizon, inp.generator)
        next_values = inp.value_fn(window.next_obs)  # [T, N]; V(s_{t+1}) before any reset
        per_env = mb.shac_objective(window.rewards, next_values, window.terminated, window.done, self.gamma)
        loss = mb.masked_actor_loss(per_env, window, inp.env)  # / (T·N); diverged envs left out
        return mb.Estimate(loss, window, window_metrics(window, loss))


def window_metrics(window: mb.Rollout, loss) -> dict[str, "torch.Tensor"]:
    """Metrics every estimator reports with the same names (``estimator/…``), as device scalars: the
    trainer reads all of an iteration's metrics in one transfer (no host–device wait per metric)."""
    rewards = window.rewards.detach()
    return {
        "estimator/return_mean": rewards.sum(0).mean(),  # undiscounted window return per env
        "estimator/reward_mean": rewards.mean(),
        "estimator/objective": -loss.detach(),
        "estimator/episode_ends": window.done.sum(),
    }
