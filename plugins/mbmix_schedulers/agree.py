"""``agree`` (ours): a horizon that follows the split-half agreement of the policy gradient."""
from __future__ import annotations

import math
from typing import Mapping

import mbmix_fw as mb

from .configs import AgreeConfig


class Agree(mb.Scheduler):
    """Multiplicative H updates from the previous iteration's smoothed split-half gradient cosine."""

    needs_gradient_agreement = True
    reads = frozenset({mb.ACTOR_UPDATED})

    def __init__(self, config: AgreeConfig, ctx: mb.BuildContext | None = None):
        self.config = config
        self.horizon_range = (config.min_horizon, config.max_horizon)
        self.horizon = float(config.initial_horizon or config.min_horizon)
        self.smoothed = math.nan  # no measurement yet

    def plan(self, iteration: int, total: int, metrics: Mapping[str, float] = mb.NO_METRICS) -> mb.Plan:
        if metrics.get(mb.ACTOR_UPDATED, 0.0) > 0:  # a policy update ran (its cosine is NaN if skipped)
            self._update(metrics.get("grad/half_cosine", math.nan))
        return mb.Plan(horizon=round(self.horizon))

    def _update(self, cosine: float) -> None:
        cfg, (low, high) = self.config, self.horizon_range
        if not math.isfinite(cosine):  # a skipped (non-finite) update or a zero gradient: back off
            self.horizon = max(low, self.horizon * cfg.shrink)
            return
        previous = self.smoothed if math.isfinite(self.smoothed) else cosine
        self.smoothed = cfg.smoothing * previous + (1.0 - cfg.smoothing) * cosine
        if self.smoothed > cfg.lengthen_above:
            self.horizon = min(high, self.horizon * cfg.growth)
        elif self.smoothed < cfg.shorten_below:
            self.horizon = max(low, self.horizon * cfg.shrink)

    def state_dict(self) -> dict:
        return {"horizon": self.horizon, "smoothed": self.smoothed}

    def load_state_dict(self, state: dict) -> None:
        self.horizon, self.smoothed = float(state["horizon"]), float(state["smoothed"])
