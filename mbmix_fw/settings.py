"""Core (non-plugin) recipe tables: ``[run]``, ``[policy]``, ``[critic]``, ``[optim]``."""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from .component import MAX_ITERATIONS, Hidden, Iterations, NumEnvs, StrictTable


class _Settings(StrictTable):
    """Strict like every recipe table (see :mod:`mbmix_fw.component`)."""


class RunSettings(_Settings):
    seed: int = Field(0, ge=0, lt=2**63)
    """Seeds torch, numpy, python's random and the run's generator."""
    iterations: int = Field(100, ge=1, le=MAX_ITERATIONS)
    """Policy updates (one estimator window each)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` picks cuda when available."""
    out: str = "runs/{name}"
    """Run folder; ``{name}`` is the recipe file's stem (no other placeholder). The CLI's ``--out`` wins.
    Never empty, the current directory, one of its parents, ``/`` or the home folder: a run writes
    several files and folders into its run folder."""
    checkpoint_every: int = Field(50, ge=1, le=MAX_ITERATIONS)
    """Iterations between checkpoints; one is also written at the end."""
    eval_every: Iterations = 0
    """Iterations between deterministic evaluations (0: only before and after training)."""
    eval_envs: NumEnvs = 16
    """Episodes run in parallel for each evaluation."""

    @field_validator("out")
    @classmethod
    def _out_names_a_folder(cls, out: str) -> str:
        if not out.strip():
            raise ValueError("empty; it would write the run into the current directory: give a folder, "
                             "e.g. out = \"runs/{name}\"")
        unknown = sorted(set(re.findall(r"{[^{}]*}", out)) - {"{name}"})
        if unknown:
            raise ValueError(f"unknown placeholder {', '.join(unknown)}; only {{name}} (the recipe file's stem) "
                             f"is replaced")
        return out


Activation = Literal["elu", "relu", "tanh", "silu"]
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class PolicySettings(_Settings):
    hidden: Hidden = Field(default_factory=lambda: [64, 64])
    """Hidden layer widths of the tanh-Gaussian MLP (``[]``: a linear-Gaussian policy)."""
    activation: Activation = "elu"
    layer_norm: bool = True
    init_log_std: float = Field(-1.0, ge=-20.0, le=5.0)
    """Initial state-independent log standard deviation (SHAC: -1). Bounded to [-20, 5]: beyond, the
    standard deviation underflows or the sampled actions are noise of size e⁵ ≈ 150."""
    squash: bool = True
    """tanh-squash actions into (-1, 1). Off for the linear-Gaussian policies of the study envs."""
    normalize_obs: bool = True
    """Running observation normalisation, frozen per window."""


class CriticSettings(_Settings):
    hidden: Hidden = Field(default_factory=lambda: [64, 64])
    activation: Activation = "elu"
    layer_norm: bool = True
    lam: float = Field(0.95, ge=0.0, le=1.0)
    """λ of the TD(λ) critic targets (separate from the mix estimator's λ)."""
    target_tau: float = Field(0.2, ge=0.0, le=1.0)
    """Polyak factor: ``target ← tau·target + (1-tau)·critic`` after each iteration (SHAC: 0.2)."""
    iterations: int = Field(16, ge=0, le=10_000)
    """Passes of critic regression per iteration (a scheduler may override); at most 10 000."""
    minibatches: NumEnvs = 4
    """Minibatches per pass (at most one sample each: more than ``num_envs × horizon`` gives no more)."""


class OptimSettings(_Settings):
    actor_lr: float = Field(2e-3, gt=0)
    critic_lr: float = Field(2e-3, gt=0)
    betas: tuple[Beta, Beta] = (0.7, 0.95)
    """Adam's β1, β2 (SHAC: 0.7, 0.95)."""
    grad_clip: float = Field(1.0, gt=0)
    """Gradient-norm clipping for actor and critic."""
