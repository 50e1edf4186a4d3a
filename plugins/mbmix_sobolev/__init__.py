"""Built-in world model ``sobolev_mlp``: an MLP (ensemble) trained on next states and simulator Jacobians.

Recipe::

    [world_model]
    kind = "sobolev_mlp"
    hidden = [256, 256]
    alpha_s = 1.0        # 0 and alpha_a = 0: the plain-MSE ablation (no probes are collected)
    probes = 4

The loss, the coordinates it works in and the probe estimator are documented in
:mod:`mbmix_sobolev.model`. The package also registers ``particle_gnn``
(:mod:`mbmix_sobolev.particle_config`), a message-passing model for envs that declare their particles. Registration imports only the config; the model (and torch) loads when a
run builds one or on first access to ``SobolevMLP``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

import mbmix_fw as mb

from .particle_config import ParticleGNNConfig, make_particle_gnn

if TYPE_CHECKING:
    from .model import EnsembleMLP, RunningMoments, SobolevMLP
    from .particle_model import ParticleGNN

__getattr__ = mb.lazy_attributes(__name__, {**dict.fromkeys(("EnsembleMLP", "RunningMoments", "SobolevMLP"), ".model"),
                                            "ParticleGNN": ".particle_model"})


MAX_MODEL_WEIGHTS = 10**9
"""Most hidden-to-hidden weights of the whole ensemble (4 GB of float32, 16 GB with Adam's state)."""


class SobolevConfig(mb.WorldModelConfig):
    kind: Literal["sobolev_mlp"] = "sobolev_mlp"
    hidden: mb.Hidden = Field(default_factory=lambda: [256, 256], min_length=1)
    """Hidden layer widths (each followed by LayerNorm and the activation)."""
    activation: Literal["silu", "elu"] = "silu"
    """Smooth activations only: the Jacobian term differentiates the network twice."""
    layer_norm: bool = True
    """LayerNorm after each hidden layer (steadier fits across state scales)."""
    members: int = Field(1, ge=1, le=1024)
    """Ensemble size; ``step`` returns the members' mean."""
    alpha_s: float = Field(1.0, ge=0.0)
    """Weight of the state-Jacobian term ``∂s'/∂s`` (normalised units; 1 balances the state term)."""
    alpha_a: float = Field(1.0, ge=0.0)
    """Weight of the action-Jacobian term ``∂s'/∂a``."""
    probe_source: Literal["adjoint", "random"] = "adjoint"
    """Where the Jacobian probes come from. ``adjoint``: the cotangents of the actor's own backward through
    each real step and the simulator's VJPs they produced (mbmix_fw/maths/adjoint_tap.py) — one probe per
    transition, in the directions the policy gradient uses, at no extra simulator cost. ``random``:
    ``probes`` random unit directions per transition, each a simulator VJP (a recomputation of the step
    for bridged simulators)."""
    probes: int = Field(4, ge=0, le=1024)
    """Random Jacobian probes per transition (``probe_source = "random"``; the adjoint source gives one).
    Ignored (0) when both alphas are 0."""
    probe_mixing: bool = True
    """Per fit step, match one random combination of a transition's probes (cost of one probe,
    unbiased) instead of every probe separately."""
    jacobian_fraction: float = Field(1.0, gt=0.0, le=1.0)
    """Fraction of each minibatch whose rows also get the Jacobian term (all rows get the state term);
    below 1 it trades Jacobian-gradient variance for a cheaper step (the double backward is the cost)."""
    lr: float = Field(1e-3, gt=0.0)
    """Adam(W) learning rate of the model fit."""
    weight_decay: float = Field(0.0, ge=0.0)
    """Decoupled (AdamW) weight decay."""
    batch_size: mb.NumEnvs = 256
    """Transitions per fit step, sampled from the replay buffer."""
    buffer_capacity: int = Field(100_000, ge=1, le=10**9)
    """Replay-buffer size in transitions (the trainer reads ``world_model.buffer_capacity``)."""
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

    @model_validator(mode="after")
    def _probes_for_jacobian_terms(self) -> "SobolevConfig":
        if (self.alpha_s > 0 or self.alpha_a > 0) and self.probes == 0:
            raise ValueError("probes: alpha_s or alpha_a > 0 needs probes >= 1; for the plain-MSE model set "
                             "alpha_s = alpha_a = 0")  # "field: …" names the field in the error line
        return self


def make_sobolev(config: SobolevConfig, ctx: "mb.BuildContext") -> "SobolevMLP":
    """Factory: a :class:`SobolevMLP` sized for ``ctx.env`` on ``ctx.device``, seeded by ``ctx.seed``."""
    from .model import SobolevMLP

    return SobolevMLP.from_config(config, ctx)


@mb.hookimpl
def register_world_models(register):
    register(SobolevConfig, make_sobolev)
    register(ParticleGNNConfig, make_particle_gnn)


__all__ = ["EnsembleMLP", "ParticleGNN", "ParticleGNNConfig", "RunningMoments", "SobolevConfig", "SobolevMLP",
           "make_particle_gnn", "make_sobolev"]
