"""Simulator values, blended gradients: step with the simulator, backpropagate through a mix of Jacobians.

``s' = sg(s_sim) + w·(f − sg f) + (1−w)·(s_sim − sg s_sim)`` (``sg``: stop-gradient) has the value of the
simulator's next state ``s_sim`` exactly — so the rollout, its rewards and the env's trajectory are the
real ones and no model error can compound along it — while its Jacobian is ``w·∂f + (1−w)·∂s_sim``: the
learned model's smooth Jacobian damps the simulator's stiff-contact noise where ``w > 0``. ``w = 0`` is the
simulator alone; ``w = 1`` backpropagates through the model only (the simulator then receives no
gradient, so the adjoint tap gets no probes from it). An MB-MIX variant of ours, not the paper's
(measured in ``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

import torch

from ..contracts.rollout_types import Dynamics


class JacobianBlend:
    """A :class:`~mbmix_fw.Dynamics` stepping ``simulator`` with gradients blended towards ``model``."""

    is_simulator = False  # its gradient is not the simulator's: the env scores what it returns

    def __init__(self, simulator: Dynamics, model: Dynamics, model_weight: float):
        if not 0.0 <= model_weight <= 1.0:
            raise ValueError(f"model_weight must lie in [0, 1], got {model_weight}")
        self.simulator, self.model, self.w = simulator, model, float(model_weight)

    def step(self, state: torch.Tensor, action: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        simulated = self.simulator.step(state, action, generator)
        if not torch.is_grad_enabled():
            return simulated
        predicted = self.model.step(state, action, None)
        w = self.w
        return (simulated.detach() + w * (predicted - predicted.detach())
                + (1.0 - w) * (simulated - simulated.detach()))
