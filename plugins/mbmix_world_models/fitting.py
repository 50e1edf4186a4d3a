"""The fitting settings every Sobolev-trained world model shares: the Jacobian terms' weights, where the
probes come from, the optimiser and the minibatch. One block, so the two models cannot drift apart in what
a setting means or how it is validated; a model overrides a default (and says why), never the meaning."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

import mbmix_fw as mb


class SobolevFitting(mb.WorldModelConfig):
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
    jacobian_fraction: float = Field(1.0, gt=0.0, le=1.0)
    """Fraction of each minibatch whose rows also get the Jacobian term (all rows get the state term);
    below 1 it trades Jacobian-gradient variance for a cheaper step (the double backward is the cost)."""
    lr: float = Field(1e-3, gt=0.0)
    """Adam(W) learning rate of the model fit."""
    weight_decay: float = Field(0.0, ge=0.0)
    """Decoupled (AdamW) weight decay."""
    batch_size: mb.NumEnvs = 256
    """Transitions per fit step, sampled from the replay buffer."""

    @model_validator(mode="after")
    def _probes_for_jacobian_terms(self) -> "SobolevFitting":
        if (self.alpha_s > 0 or self.alpha_a > 0 or getattr(self, "smoothness", 0.0) > 0) and self.probes == 0:
            raise ValueError("probes: alpha_s, alpha_a or smoothness > 0 needs probes >= 1; for the plain-MSE "
                             "model set them to 0")  # "field: …" names the field in the error line
        return self
