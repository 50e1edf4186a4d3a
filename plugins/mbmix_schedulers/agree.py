"""``agree`` (ours): a horizon that follows the split-half agreement of the policy gradient."""
from __future__ import annotations

import math
from typing import Literal, Mapping

from pydantic import Field, ValidationInfo, field_validator

import mbmix_fw as mb

from .horizons import horizon_range_not_empty


class AgreeConfig(mb.SchedulerConfig):
    """Ours, in no anchor: the window length H grows while the policy gradients of the two halves of
    the env batch agree and shrinks when they decorrelate (``grad/half_cosine``, measured within the
    update's one backward: ``mbmix_fw/training/agreement.py``). Env-agnostic: no contact signal needed.

    Why a cosine threshold: the halves' gradients are means over N/2 envs each; with a per-env
    signal-to-noise ratio ρ (squared norm of the mean gradient over the per-env variance), their
    expected cosine is about ``ρN/2 / (1 + ρN/2)``. Lengthening only above ``lengthen_above`` keeps H where
    the batch gradient is mostly signal at this batch size; the measured cloth cosines (64 envs: 0.99 at
    H = 1, 0.63–0.97 at H = 4, 0.02–0.13 at H = 16) show how fast it falls with H there."""

    kind: Literal["agree"] = "agree"
    min_horizon: mb.Steps = 2
    """Shortest window (steps)."""
    max_horizon: mb.Steps = 32
    """Longest window (steps); sizes the memory check."""
    initial_horizon: mb.Steps | None = None
    """First iteration's H (unset: ``min_horizon``, starting short like AHAC)."""
    lengthen_above: float = Field(0.5, gt=-1.0, le=1.0)
    """H grows (× ``growth``) after an iteration whose smoothed cosine is above this."""
    shorten_below: float = Field(0.2, ge=-1.0, lt=1.0)
    """H shrinks (× ``shrink``) after an iteration whose smoothed cosine is below this, or whose policy
    update was skipped as non-finite. Between the two thresholds H stays."""
    growth: float = Field(1.25, gt=1.0, le=4.0)
    """Factor on H when the halves agree (H is kept as a float and rounded for each plan)."""
    shrink: float = Field(0.5, gt=0.0, lt=1.0)
    """Factor on H when they disagree."""
    smoothing: float = Field(0.5, ge=0.0, lt=1.0)
    """Weight of the previous smoothed cosine in ``c̄ ← smoothing·c̄ + (1 - smoothing)·cos`` (0: none)."""

    @field_validator("max_horizon")
    @classmethod
    def _range_not_empty(cls, max_horizon: int, info: ValidationInfo) -> int:
        return horizon_range_not_empty(max_horizon, info)

    @field_validator("initial_horizon")
    @classmethod
    def _initial_in_range(cls, initial: int | None, info: ValidationInfo) -> int | None:
        low, high = info.data.get("min_horizon"), info.data.get("max_horizon")
        if initial is not None and low is not None and high is not None and not low <= initial <= high:
            raise ValueError(f"initial_horizon={initial} lies outside [min_horizon, max_horizon] = [{low}, {high}]")
        return initial

    @field_validator("shorten_below")
    @classmethod
    def _thresholds_ordered(cls, shorten_below: float, info: ValidationInfo) -> float:
        above = info.data.get("lengthen_above")
        if above is not None and shorten_below >= above:
            raise ValueError(f"shorten_below={shorten_below} must be below lengthen_above={above}")
        return shorten_below


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
