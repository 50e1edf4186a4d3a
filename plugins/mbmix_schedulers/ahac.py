"""``ahac``: AHAC's contact-aware adaptive horizon (Georgiev et al., ICML 2024)."""
from __future__ import annotations

import math
from typing import Mapping

import mbmix_fw as mb

from .configs import AhacConfig


class Ahac(mb.Scheduler):
    """AHAC's dual update, once per iteration, from the previous window's contact stiffness.

    DiffRL keeps a vector ``λ`` of one dual variable per step of the window, all equal to ``λ₀`` at the
    window start; after the window (with ``c̄_i`` the stiffness at step ``i`` averaged over the envs)::

        λ_i ← λ₀ - lr·(C - c̄_i)   for i < H_prev;      H ← clip(H + lr·Σ_i λ_i, H_min, H_max);   λ₀ ← λ_0

    and the next window rolls ``round(H)`` steps. ``Σ_i λ_i = H_prev·(λ₀ + lr·(c̄ - C))`` needs only the
    window mean ``c̄`` (``contact/stiffness``) and ``λ₀``'s update only the first step's
    (``contact/stiffness_first_step``), so the update is DiffRL's exactly. ``λ`` is not projected onto
    λ ≥ 0 (DiffRL does not either). An iteration without a finite stiffness (NaN) leaves H and λ as
    they are. H, λ₀ are checkpointed (``state_dict``): a resumed run continues the same schedule.
    """

    needs_contact = True

    def __init__(self, config: AhacConfig, ctx: mb.BuildContext | None = None):
        self.config = config
        self.horizon_range = (config.min_horizon, config.max_horizon)
        self.horizon = float(config.min_horizon)
        self.dual = 0.0  # λ₀

    def plan(self, iteration: int, total: int, metrics: Mapping[str, float] = mb.NO_METRICS) -> mb.Plan:
        if iteration > 0:
            self._dual_step(metrics, self._dual_lr(iteration - 1, total))
        return mb.Plan(horizon=round(self.horizon))

    def _dual_lr(self, iteration: int, total: int) -> float:
        """AHAC decays ``lambd_lr`` linearly with the epoch from 5e-4 to 1e-5 (to lr/50 here)."""
        lr = self.config.dual_lr
        return lr + (lr / 50 - lr) * iteration / total if self.config.dual_lr_schedule == "linear" else lr

    def _dual_step(self, metrics: Mapping[str, float], lr: float) -> None:
        mean = metrics.get("contact/stiffness", math.nan)
        first = metrics.get("contact/stiffness_first_step", math.nan)
        steps = metrics.get("plan/horizon", math.nan)
        if not (math.isfinite(mean) and math.isfinite(first) and math.isfinite(steps)):
            return
        threshold = self.config.contact_threshold
        dual_sum = steps * (self.dual + lr * (mean - threshold))  # Σ_i λ_i after λ_i -= lr·(C - c̄_i)
        sign = 1.0 if self.config.horizon_direction == "diffrl" else -1.0
        low, high = self.horizon_range
        self.horizon = min(max(self.horizon + sign * lr * dual_sum, low), high)
        self.dual = self.dual + lr * (first - threshold)

    def state_dict(self) -> dict:
        return {"horizon": self.horizon, "dual": self.dual}

    def load_state_dict(self, state: dict) -> None:
        self.horizon, self.dual = float(state["horizon"]), float(state["dual"])
