"""Config of the ``particle_gnn`` world model (torch-free, so registration stays instant).

Recipe::

    [world_model]
    kind = "particle_gnn"
    architecture = "integrator"   # learned forces, integrated by the env's own substeps
    hidden = 16                   # per-particle force network width
    message_width = 0             # per-spring force MLP width; 0: learned linear springs only
    alpha_s = 1.0        # 0 and alpha_a = 0: the plain-MSE ablation (no probes are collected)
    probes = 1

Needs an env that declares its particle layout (:meth:`mbmix_fw.DiffEnv.particle_layout`): the cloth does.
The model is documented in :mod:`mbmix_sobolev.particle_model`.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

import mbmix_fw as mb


class ParticleGNNConfig(mb.WorldModelConfig):
    kind: Literal["particle_gnn"] = "particle_gnn"
    architecture: Literal["integrator", "message_passing"] = "integrator"
    """``integrator``: learned spring and per-particle forces integrated by the env's own substeps (exact
    reach and oscillation of stiff springs); ``message_passing``: ``rounds`` rounds of one-shot message passing
    predicting the step's velocity change (and a position correction). See :mod:`mbmix_sobolev.particle_model`."""
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
    alpha_s: float = Field(1.0, ge=0.0)
    """Weight of the state-Jacobian term (relative error of the probe rows ``uᵀ∂ŝ'/∂s``)."""
    alpha_a: float = Field(1.0, ge=0.0)
    """Weight of the action-Jacobian term (relative error of ``uᵀ∂ŝ'/∂a``)."""
    probe_source: Literal["adjoint", "random"] = "adjoint"
    """Where the Jacobian probes come from, as for ``sobolev_mlp``: ``adjoint``, the actor backward's own
    probes (one per transition, free); ``random``, ``probes`` random simulator VJPs per transition."""
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
    weight_decay: float = Field(0.0, ge=0.0)
    """Decoupled (AdamW) weight decay."""
    batch_size: mb.NumEnvs = 64
    """Transitions per fit step (each holds every particle: 64 cloths of 64 particles are 4,096 samples of
    the shared network). Larger batches cost less per transition up to ~64 (fixed per-operation overhead of
    the substep loop): on the cloth (1 CPU thread, ``benchmarks/particle_fit_cost.py``) 16 costs ~1.35× as
    much per transition as 64; 128 about the same as 64."""
    buffer_capacity: int = Field(100_000, ge=1, le=10**9)
    """Replay-buffer size in transitions (the trainer reads ``world_model.buffer_capacity``)."""

    @model_validator(mode="after")
    def _message_passing_needs_messages(self) -> "ParticleGNNConfig":
        if self.architecture == "message_passing" and self.message_width < 1:
            raise ValueError("message_width: architecture 'message_passing' needs message_width >= 1")
        return self

    @model_validator(mode="after")
    def _probes_for_jacobian_terms(self) -> "ParticleGNNConfig":
        if (self.alpha_s > 0 or self.alpha_a > 0) and self.probes == 0:
            raise ValueError("probes: alpha_s or alpha_a > 0 needs probes >= 1; for the plain-MSE model set "
                             "alpha_s = alpha_a = 0")  # "field: …" names the field in the error line
        return self


def make_particle_gnn(config: ParticleGNNConfig, ctx: "mb.BuildContext"):
    """Factory: a :class:`~mbmix_sobolev.particle_model.ParticleGNN` for ``ctx.env``'s particle layout."""
    from .particle_model import ParticleGNN

    return ParticleGNN.from_config(config, ctx)
