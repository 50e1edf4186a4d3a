"""``model_free``: SHAC, BPTT and MIX through the simulator alone (the default scheduler)."""
from __future__ import annotations

from typing import Mapping

import mbmix_fw as mb

from .configs import ModelFreeConfig


class ModelFree(mb.Scheduler):
    """Every iteration: one simulator window, policy loss through the simulator only (β = 1)."""

    def __init__(self, config: ModelFreeConfig, ctx: mb.BuildContext | None = None):
        self.config = config

    def plan(self, iteration: int, total: int, metrics: Mapping[str, float] = mb.NO_METRICS) -> mb.Plan:
        return mb.Plan(env_weight=1.0)
