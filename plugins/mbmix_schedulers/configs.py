"""The config models of the built-in schedulers (``model_free``, ``dyna``, ``ahac``, ``agree``): every plugin
keeps its configs in ``configs.py``, the one place that must stay free of heavy imports so registering the
plugin (``mbmix-fw plugins``) stays instant."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

import mbmix_fw as mb

from .horizons import horizon_range_not_empty


class ModelFreeConfig(mb.SchedulerConfig):
    kind: Literal["model_free"] = "model_free"


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


class AhacConfig(mb.SchedulerConfig):
    """AHAC's adaptive horizon (Georgiev et al., ICML 2024; DiffRL ``algorithms/ahac.py``): the window
    length H follows a dual variable on the env's mean contact stiffness against a threshold C.

    Needs an env with the contact signal (:meth:`mbmix_fw.DiffEnv.contact_stiffness`: ``cloth_fold``;
    ``brax`` on the ``generalized`` backend)
    and an estimator that honours a planned horizon (``shac``, ``mix``). Defaults are AHAC's
    (``scripts/cfg/alg/ahac.yaml``); ``contact_threshold`` and ``dual_lr`` are in the env's units and
    must be rescaled for bodies unlike dflex's Ant (``recipes/cloth_ahac.toml`` says how)."""

    kind: Literal["ahac"] = "ahac"
    min_horizon: mb.Steps = 8
    """H_min (steps), also the first iteration's H (AHAC: ``steps_min = 8``; H starts there)."""
    max_horizon: mb.Steps = 64
    """H_max (steps) (AHAC: ``steps_max = 64``). Sizes the memory check of the longest window."""
    contact_threshold: float = Field(500.0, gt=0.0)
    """C (kg: contact force over acceleration, the env's ``contact_stiffness`` units). AHAC: 500 for
    dflex's locomotion bodies; rescale for other envs (the 0.5 kg cloth: ``recipes/cloth_ahac.toml``)."""
    dual_lr: float = Field(5e-4, gt=0.0)
    """Step size of both the dual variable and H (AHAC's ``lambd_lr = 5e-4``; it uses one for both)."""
    dual_lr_schedule: Literal["constant", "linear"] = "linear"
    """``linear``: ``dual_lr`` decays to ``dual_lr / 50`` over the run (AHAC: 5e-4 → 1e-5, with the same
    schedule as its learning rates, which are ``optim.lr_schedule``'s); ``constant`` keeps it."""
    horizon_direction: Literal["diffrl", "shorten_when_stiff"] = "diffrl"
    """Sign of the H step. ``diffrl`` is DiffRL's code, ``H += lr·Σλ`` with ``λ -= lr·(C - c)``: H *grows*
    while the mean stiffness c exceeds C and shrinks below it (from H_min upwards, so with c < C it stays
    at H_min). ``shorten_when_stiff`` flips the H step (``H -= lr·Σλ``), the reading of the paper's
    stated aim (truncate before stiff contact); an ablation, not AHAC's published runs."""

    @field_validator("max_horizon")
    @classmethod
    def _range_not_empty(cls, max_horizon: int, info: ValidationInfo) -> int:
        return horizon_range_not_empty(max_horizon, info)


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
