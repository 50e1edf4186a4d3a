"""The config models of the built-in world models (``sobolev_mlp``, ``particle_gnn``): torch-free, so
registering the plugin (``mbmix-fw plugins``) stays instant; every plugin keeps its configs in
``configs.py`` so that property has one place to hold.

``particle_gnn`` needs an env that declares its particle layout (:meth:`mbmix_fw.DiffEnv.particle_layout`):
the cloth does. The models are documented in :mod:`mbmix_world_models.model` and
:mod:`mbmix_world_models.particle_model`.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

import mbmix_fw as mb

from .fitting import SobolevFitting


MAX_MODEL_WEIGHTS = 10**9
"""Most hidden-to-hidden weights of the whole ensemble (4 GB of float32, 16 GB with Adam's state)."""


class SobolevConfig(SobolevFitting):
    kind: Literal["sobolev_mlp"] = "sobolev_mlp"
    hidden: mb.Hidden = Field(default_factory=lambda: [256, 256], min_length=1)
    """Hidden layer widths (each followed by LayerNorm and the activation)."""
    activation: Literal["silu", "elu"] = "silu"
    """Smooth activations only: the Jacobian term differentiates the network twice."""
    layer_norm: bool = True
    """LayerNorm after each hidden layer (steadier fits across state scales)."""
    members: int = Field(1, ge=1, le=1024)
    """Ensemble size; ``step`` returns the members' mean."""
    probe_mixing: bool = True
    """Per fit step, match one random combination of a transition's probes (cost of one probe,
    unbiased) instead of every probe separately."""
    smoothness: float = Field(0.0, ge=0.0)
    """Weight λ of a penalty on the model's own Jacobian along the probes, relative to the simulator's
    (``‖uᵀ(∂f/∂s − I)‖²/‖t_s − u‖² + ‖uᵀ∂f/∂a‖²/‖t_a‖²``): a model smoother than the simulator (PWM,
    Georgiev et al. 2025). With α > 0 the Jacobian learnt along a probe is α/(α+λ) of the simulator's; with
    α = 0 it is as small as the next-state fit allows. 0 (default) leaves the loss as it was. Needs probes."""
    clip_probe_norm: float | None = Field(None, gt=0.0)
    """Scale each target probe row ``[uᵀJ_s, uᵀJ_a]`` down to at most this norm (stiff contacts).
    Off by default: smooth simulators need no clipping, and a clip biases the Jacobians learned."""

    @field_validator("members")
    @classmethod
    def _ensemble_fits_in_memory(cls, members: int, info: ValidationInfo) -> int:
        """The factory allocates the ensemble before any memory check can see the env: bound it here."""
        hidden = info.data.get("hidden")
        weights = members * sum(a * b for a, b in zip(hidden, hidden[1:])) if hidden else 0
        if weights > MAX_MODEL_WEIGHTS:
            raise ValueError(f"{members} members of hidden={hidden} hold {weights:.3g} hidden-to-hidden weights, "
                             f"more than the maximum {MAX_MODEL_WEIGHTS:.0e}; lower members or the widths")
        return members


class ParticleGNNConfig(SobolevFitting):
    kind: Literal["particle_gnn"] = "particle_gnn"
    architecture: Literal["integrator", "message_passing"] = "integrator"
    """``integrator``: learned spring and per-particle forces integrated by the env's own substeps (exact
    reach and oscillation of stiff springs); ``message_passing``: ``rounds`` rounds of one-shot message passing
    predicting the step's velocity change (and a position correction). See :mod:`mbmix_world_models.particle_model`."""
    hidden: int = Field(16, ge=1, le=mb.MAX_WIDTH)
    """Width of the per-particle network (integrator: the per-particle force MLP's two hidden layers)."""
    message_width: int = Field(0, ge=0, le=mb.MAX_WIDTH)
    """Width of the per-coupling network (integrator: the spring-force MLP's hidden layer on top of the
    learned linear spring; 0: linear springs only, a learned stiffness and damping per kind — the cheapest;
    must be >= 1 for ``message_passing``)."""
    rounds: int = Field(2, ge=1, le=16)
    """``message_passing`` only: rounds per predicted step (information travels ``rounds`` couplings)."""
    activation: Literal["silu", "elu", "tanh"] = "silu"
    """Smooth activations only: the Jacobian term differentiates the network twice."""
    position_correction: bool = True
    """``message_passing`` only: also predict a per-particle position correction on top of
    ``x + dt·(v + w·Δv)`` (the env's integration for constant acceleration within a step); off: positions come
    from ``Δv`` alone."""
    probes: int = Field(1, ge=0, le=1024)
    """Random Jacobian probes per transition (``probe_source = "random"``; the adjoint source gives one).
    Ignored (0) when both alphas are 0."""
    jacobian_fraction: float = Field(1.0, gt=0.0, le=1.0)
    """Fraction of each minibatch whose rows also get the Jacobian terms (as ``sobolev_mlp``'s): the double
    backward through the substeps is most of the fit's cost. Measured on the cloth (``benchmarks/RESULTS.md``):
    0.25 cuts the cost per transition by ~30 % but doubles both held-out Jacobian errors (worse than α = 0),
    so the default is 1."""
    substeps: int | None = Field(None, ge=1, le=1024)
    """``integrator`` only: semi-implicit Euler substeps per env step; unset: the env's own (its particle
    layout's ``substeps``), with which the model's structure can represent the env exactly. Fewer substeps
    cost proportionally less but integrate the stiff springs less faithfully: on the cloth (8 substeps) 4 cut
    the fit cost by 38 % and raised the held-out Jacobian errors from 0.17 / 0.05 to 0.30 / 0.16
    (``benchmarks/RESULTS.md``)."""
    lr: float = Field(1e-2, gt=0.0)
    """Adam(W) learning rate of the model fit."""
    batch_size: mb.NumEnvs = 64
    """Transitions per fit step (each holds every particle: 64 cloths of 64 particles are 4,096 samples of
    the shared network). Larger batches cost less per transition up to ~64 (fixed per-operation overhead of
    the substep loop): on the cloth (1 CPU thread, ``benchmarks/particle_fit_cost.py``) 16 costs ~1.35× as
    much per transition as 64; 128 about the same as 64."""

    @model_validator(mode="after")
    def _message_passing_needs_messages(self) -> "ParticleGNNConfig":
        if self.architecture == "message_passing" and self.message_width < 1:
            raise ValueError("message_width: architecture 'message_passing' needs message_width >= 1")
        return self
