"""``dyna``: MB-MIX's regime, simulator windows feeding the buffer and model branches beside them."""
from __future__ import annotations

import math
from typing import Mapping

import mbmix_fw as mb

from .configs import DynaConfig


MODEL_ERROR_METRIC = mb.MODEL_JACOBIAN_ERROR_A
"""The held-out model quality ``dyna.model_error_gate`` reads (the world model's ``evaluate``, every iteration)."""
STATE_ERROR_METRIC = mb.MODEL_JACOBIAN_ERROR_S
"""Read too with ``dyna.gate_on = "both"``."""


class Dyna(mb.Scheduler):
    """MB-MIX's regime: simulator windows feed the buffer; the policy also learns through model branches."""

    def __init__(self, config: DynaConfig, ctx: mb.BuildContext | None = None):
        self.config = config

    @property
    def reads(self) -> frozenset[str]:
        """The gate's held-out errors, when it gates (``model_error_gate`` set)."""
        if self.config.model_error_gate is None:
            return frozenset()
        return frozenset({MODEL_ERROR_METRIC, *((STATE_ERROR_METRIC,) if self.config.gate_on == "both" else ())})

    def plan(self, iteration: int, total: int, metrics: Mapping[str, float] = mb.NO_METRICS) -> mb.Plan:
        cfg = self.config
        if cfg.warmup_env_steps is not None:
            warming = metrics.get("env/steps", 0.0) < cfg.warmup_env_steps
        else:
            warming = iteration < cfg.warmup_iterations
        beta = 1.0 if warming else cfg.env_weight
        if not warming and cfg.model_error_gate is not None:
            error = metrics.get(MODEL_ERROR_METRIC, math.inf)
            if cfg.gate_on == "both":
                error = max(error, metrics.get(STATE_ERROR_METRIC, math.inf))
            trust = max(0.0, 1.0 - error / cfg.model_error_gate) if math.isfinite(error) else 0.0
            beta = 1.0 - (1.0 - cfg.env_weight) * trust
        return mb.Plan(
            env_weight=beta,
            model_branches=0 if beta == 1.0 else cfg.model_branches,
            model_fit_steps=cfg.model_fit_steps,
            jacobian_blend=0.0 if warming else cfg.jacobian_blend,
            model_horizon=cfg.model_horizon,
            branch_recent=cfg.branch_recent,
            model_fit_per_transition=cfg.model_fit_per_transition,
        )
