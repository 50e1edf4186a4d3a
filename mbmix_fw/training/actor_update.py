"""The actor's update: the policy as the estimators call it, and one guarded step on the mixed loss
``β·L_env + (1-β)·L_model`` of the real window and the model branches.

Why its own role: the policy's optimiser, its learning rate and the gradient gate on its actions are
what every estimator shares; the estimators only build losses.
"""
from __future__ import annotations

from typing import Any

import torch

from ..contracts.estimator import Estimate
from .guard import DivergenceGuard
from .setup import Networks


class ActorUpdate:
    """Steps ``networks.policy`` with ``optimizer`` through ``guard``."""

    def __init__(self, networks: Networks, optimizer: torch.optim.Optimizer, guard: DivergenceGuard):
        self.networks, self.optimizer, self.guard = networks, optimizer, guard

    def policy_fn(self, obs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The policy as estimators call it: raw observations in, actions out, and on the way back the
        guard's gate on non-finite action-gradient rows (:meth:`DivergenceGuard.gate_action_grads`)."""
        return self.guard.gate_action_grads(self.networks.policy(self.networks.normalize(obs), generator))

    def step(self, real: Estimate, branch: Estimate | None, beta: float) -> dict[str, Any]:
        """One step on ``β·real.loss + (1-β)·branch.loss`` (either term absent when its weight or estimate
        is); no step when no term carries a gradient. Returns ``loss/actor`` and ``grad/actor_norm``."""
        loss = beta * real.loss if beta > 0 else None
        if branch is not None:
            term = (1.0 - beta) * branch.loss
            loss = term if loss is None else loss + term
        if loss is None or not loss.requires_grad:
            return {}
        return {"loss/actor": loss.detach(),
                "grad/actor_norm": self.guard.step(loss, self.networks.policy, self.optimizer, "actor")}

    def state_entries(self) -> dict[str, Any]:
        """What the checkpoint keeps of the actor: the policy, its optimiser and the normaliser."""
        obs_norm = self.networks.obs_norm
        return {"policy": self.networks.policy.state_dict(), "actor_opt": self.optimizer.state_dict(),
                "obs_norm": obs_norm.state_dict() if obs_norm is not None else None}

    def load_state_entries(self, state: dict[str, Any]) -> None:
        self.networks.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["actor_opt"])
        if self.networks.obs_norm is not None:
            self.networks.obs_norm.load_state_dict(state["obs_norm"])
