"""The config models of ``shac``, ``mix`` and ``bptt``: torch-free, so registering the plugin stays instant
(every plugin keeps its configs in ``configs.py``)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

import mbmix_fw as mb


class ShacConfig(mb.EstimatorConfig):
    """SHAC (Xu et al., ICLR 2022): short windows of ``horizon`` steps bootstrapped with the target critic."""

    kind: Literal["shac"] = "shac"
    horizon: mb.Steps = 32
    """Window length H: steps rolled out and differentiated per policy update (SHAC: 32)."""
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    """Discount, shared with the critic's TD(λ) targets."""


class MixConfig(mb.EstimatorConfig):
    """MB-MIX's λ-mixture of truncated windows ``J^mix = Σ_H w_H J_H`` (arXiv 2503.01178; truncation,
    ``interval`` and ``start_times`` are our reconstruction, see ``mbmix_fw.maths.mix_returns``)."""

    kind: Literal["mix"] = "mix"
    lam: float = Field(0.97, ge=0.0, le=1.0)
    """λ: weight ``(1-λ)λ^(k-1)`` on window length ``kΔ``, the tail on ``horizon``. 1 = SHAC, 0 = Δ-step.
    Default 0.97 for ``horizon = 32`` (rule of thumb λ ≈ 1 − 1/horizon). Against SHAC at every window
    length (benchmarks/RESULTS.md, measured at H_max = 16): below SHAC's bias–variance frontier on the
    tabular MDP, on it (within two standard errors) on the LQR."""
    horizon: mb.Steps = 32
    """H_max, the rollout's length and the longest window mixed, in every iteration whose plan sets none. A
    scheduler's plan may set another H_max for an iteration (``Plan.horizon``: any multiple of ``interval``,
    longer than this one too, within the scheduler's declared ``horizon_range``)."""
    interval: int = Field(1, ge=1)
    """Mix interval Δ (ours): only lengths Δ, 2Δ, …, H_max are mixed. Must divide ``horizon``."""
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    """Discount, shared with the critic's TD(λ) targets."""
    start_times: Literal["first", "all"] = "first"
    """``first``: one mixture per episode segment, started at its first step (SHAC's choice).
    ``all`` (ours, like Dreamer): average the λ-returns started at every step; needs ``interval = 1``."""

    # Field validators (not a model validator) so an error names the field: estimator.interval, …
    @field_validator("interval")
    @classmethod
    def _interval_divides_horizon(cls, interval: int, info: ValidationInfo) -> int:
        horizon = info.data.get("horizon")
        if horizon is not None and horizon % interval:
            raise ValueError(
                f"interval={interval} must divide horizon={horizon} (mixed lengths are interval, "
                f"2·interval, …, horizon); choose a divisor of {horizon}"
            )
        return interval

    @field_validator("start_times")
    @classmethod
    def _all_starts_need_unit_interval(cls, start_times: str, info: ValidationInfo) -> str:
        if start_times == "all" and info.data.get("interval", 1) != 1:
            raise ValueError("start_times='all' needs interval=1 (set interval = 1 or start_times = 'first')")
        return start_times


class BpttConfig(mb.EstimatorConfig):
    """Backpropagation through time, no critic: through whole episodes from fresh resets (default), or
    truncated to windows of ``horizon`` steps that carry the env state across windows and cut the
    graph between them (DiffRL's BPTT baseline). Model branches start from their buffer states."""

    kind: Literal["bptt"] = "bptt"
    horizon: mb.Steps | None = None
    """Truncated BPTT: differentiate windows of this many steps (at most ``env.episode_length``),
    continuing the episodes between windows with the gradient cut (DiffRL: ``steps_num``, e.g. 128 of a
    1000-step episode). Unset: whole episodes from fresh resets. A scheduler's ``Plan.horizon`` sets it
    per iteration."""
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    """Discount of the episode return."""
    checkpoint_segments: int = Field(0, ge=0, le=mb.MAX_STEPS)
    """Gradient checkpointing: recompute the episode in this many segments during backward to save
    memory (0 = off). Gives the same gradient."""
