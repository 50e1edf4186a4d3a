"""``dyna``: MB-MIX's regime, simulator windows feeding the buffer and model branches beside them."""
from __future__ import annotations

import math
from typing import Literal, Mapping

from pydantic import Field

import mbmix_fw as mb


class DynaConfig(mb.SchedulerConfig):
    requires_world_model = True
    kind: Literal["dyna"] = "dyna"
    env_weight: float = Field(0.5, ge=0.0, le=1.0)
    """β: weight of the simulator-rollout loss; 1-β goes to model branches. β=1 is pure simulator
    training (the model is still fitted), β=0 pure model-based."""
    model_branches: mb.NumEnvs = 64
    """Start states drawn from the replay buffer for model rollouts each iteration."""
    model_fit_steps: int = Field(8, ge=0, le=10_000)
    """World-model minibatch steps per iteration (K)."""
    warmup_iterations: mb.Iterations = 5
    """Iterations of pure simulator training (β=1, model fitted but unused) before model branches start,
    so the policy never follows an untrained model. Ignored when ``warmup_env_steps`` is set."""
    warmup_env_steps: int | None = Field(None, ge=0, le=10**12)
    """The warm-up in units of data: model branches may start once the run has taken this many env steps
    (``env/steps`` of the previous iteration). Unlike iterations, it does not grow with the window length,
    so a long window does not silence the model. None: ``warmup_iterations`` decides."""
    model_fit_per_transition: float = Field(0.0, ge=0.0, le=10_000.0)
    """r: a fit budget that keeps up with the data — each iteration also fits ``ceil(r · n / batch_size)``
    minibatches, ``n`` the transitions the iteration added to the buffer (r = 1: every new transition is
    seen once on average), on top of ``model_fit_steps``. 0: ``model_fit_steps`` only."""
    jacobian_blend: float = Field(0.0, ge=0.0, le=1.0)
    """w: after warm-up, the real window keeps the simulator's values but backpropagates through
    ``w·∂model + (1−w)·∂simulator`` (mbmix_fw/maths/jacobian_blend.py): a smooth learned Jacobian damps
    stiff-contact noise and no model error compounds along the rollout. 0: the simulator's Jacobian."""

    model_horizon: mb.Steps | None = None
    """Window length of the model branches (None: the estimator's horizon, as the real window). Short
    branches keep model errors from compounding: the policy-gradient cosine between model and simulator
    rollouts fell from 0.55–0.73 at H = 1 to ~0 at H = 16 on the cloth (``benchmarks/RESULTS.md``)."""
    branch_recent: int = Field(0, ge=0, le=10**9)
    """Draw branch start states from the newest this-many buffer transitions (0: the whole buffer): states
    the current policy visits, where the model was just measured."""
    model_error_gate: float | None = Field(None, gt=0.0)
    """Use the model only while it is accurate: with a value e_max, model branches run (after the warm-up)
    only in iterations whose previous held-out ``model/jacobian_error_a`` (the relative action-Jacobian
    error, 0 perfect, 1 as bad as no model) is below e_max, and β rises from ``env_weight`` towards 1 as the
    error grows: ``β = 1 − (1 − env_weight) · (1 − e / e_max)``. None: fixed β after the warm-up."""
    gate_on: Literal["action", "both"] = "action"
    """Which held-out Jacobian error the gate reads: ``action`` (``model/jacobian_error_a``, ∂f/∂a, through
    which the policy gradient enters each step) or ``both`` (the larger of that and ``model/jacobian_error_s``,
    ∂f/∂s, which carries it from step to step along a branch)."""

    @property
    def simulator_gradient(self) -> bool:
        return self.env_weight > 0 and self.jacobian_blend < 1


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
