"""A horizon that backs off when the policy gradient explodes, as an mbmix-fw scheduler plugin
(kind ``backoff_horizon``).

Long windows through a stiff or chaotic simulator give exploding policy gradients; short ones give
biased but tame ones. This scheduler adapts the window length H like TCP adapts its window (additive
increase, multiplicative decrease): after an iteration whose actor gradient norm (``grad/actor_norm``,
before clipping) stayed below ``max_grad_norm`` it lengthens H by ``step``; after one above it, or one
whose update was skipped as non-finite (a NaN norm), it halves H. H stays in ``[min_horizon,
max_horizon]``.

It shows the three things an adaptive scheduler needs:

- ``plan(iteration, total, metrics)``: ``metrics`` holds the previous iteration's logged values as host
  floats (empty at iteration 0), so reading them costs nothing.
- ``Plan(horizon=H)`` sets this iteration's window; ``horizon_range`` declares the lengths it may ask for,
  so a recipe pairing it with an estimator that cannot roll them fails before the run starts.
- ``state_dict`` / ``load_state_dict``: the current H lives in the checkpoint, so a resumed run plans
  exactly what the uninterrupted one would have.

Only ``import mbmix_fw as mb`` is used.
"""
from __future__ import annotations

import math
from typing import Literal, Mapping

from pydantic import Field, ValidationInfo, field_validator

import mbmix_fw as mb


class BackoffHorizonConfig(mb.SchedulerConfig):
    """Additive-increase / multiplicative-decrease window length, driven by the actor gradient norm."""

    kind: Literal["backoff_horizon"] = "backoff_horizon"
    min_horizon: mb.Steps = 4
    """Shortest window (steps)."""
    max_horizon: mb.Steps = 32
    """Longest window (steps); also the first iteration's."""
    step: int = Field(1, ge=1)
    """Steps added to H after an iteration whose gradient norm stayed below ``max_grad_norm``."""
    max_grad_norm: float = Field(10.0, gt=0.0)
    """Actor gradient norm (before clipping) above which H is halved."""

    @field_validator("max_horizon")
    @classmethod
    def _range_not_empty(cls, max_horizon: int, info: ValidationInfo) -> int:
        low = info.data.get("min_horizon")
        if low is not None and max_horizon < low:
            raise ValueError(f"max_horizon={max_horizon} is below min_horizon={low}")
        return max_horizon


class BackoffHorizon(mb.Scheduler):
    """Plans H for each iteration from the previous iteration's ``grad/actor_norm``."""

    def __init__(self, config: BackoffHorizonConfig, ctx: mb.BuildContext | None = None):
        self.config = config
        self.horizon_range = (config.min_horizon, config.max_horizon)
        self.horizon = config.max_horizon

    def plan(self, iteration: int, total: int, metrics: Mapping[str, float] = mb.NO_METRICS) -> mb.Plan:
        cfg = self.config
        norm = metrics.get("grad/actor_norm")
        if norm is not None:  # absent at iteration 0 and when no policy update ran
            if math.isfinite(norm) and norm <= cfg.max_grad_norm:
                self.horizon = min(cfg.max_horizon, self.horizon + cfg.step)
            else:
                self.horizon = max(cfg.min_horizon, self.horizon // 2)
        return mb.Plan(horizon=self.horizon)

    def state_dict(self) -> dict:
        return {"horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.horizon = int(state["horizon"])


@mb.hookimpl
def register_schedulers(register):
    register(BackoffHorizonConfig, BackoffHorizon)
