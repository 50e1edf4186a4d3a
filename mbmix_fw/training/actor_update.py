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
    """Steps ``networks.policy`` with ``optimizer`` through ``guard``.

    ``measure_model_share``: log how much of each step came from the model branches (runs with a world
    model): ``model/grad_share`` = ``‖g_model‖ / (‖g_env‖ + ‖g_model‖)`` of the two weighted terms'
    gradients (0 when no branch ran, 1 with β = 0), and ``model/update_norm`` = ``lr · c · ‖g_model‖``, the
    length of the model's part of the parameter step (``c`` the clipping factor), so a run's share of
    the actor's learning is ``Σ model/update_norm / Σ grad/update_norm``; ``model/grad_cosine`` is the
    cosine between the two terms' gradients when both are present. It costs one extra backward
    through the branches (model and policy only, never the simulator): ``g_env`` is the total minus
    ``g_model``. In data-parallel training the total is the ranks' mean and ``g_model`` this rank's.
    """

    def __init__(self, networks: Networks, optimizer: torch.optim.Optimizer, guard: DivergenceGuard,
                 grad_clip: float = 1.0, measure_model_share: bool = False):
        self.networks, self.optimizer, self.guard = networks, optimizer, guard
        self.grad_clip, self.measure_model_share = grad_clip, measure_model_share

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
        if not self.measure_model_share:
            return {"loss/actor": loss.detach(),
                    "grad/actor_norm": self.guard.step(loss, self.networks.policy, self.optimizer, "actor")}
        params = list(self.networks.policy.parameters())
        model_grad = None
        if branch is not None and beta < 1:
            grads = torch.autograd.grad((1.0 - beta) * branch.loss, params, retain_graph=True, allow_unused=True)
            model_grad = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                                    for g, p in zip(grads, params)])
        parts: dict[str, torch.Tensor] = {}

        def measure(module: torch.nn.Module) -> None:
            total = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in params])
            model = torch.zeros_like(total) if model_grad is None else model_grad
            env = total - model
            parts["model"], parts["env"] = model.norm(), env.norm()
            parts["cosine"] = (model @ env) / (parts["model"] * parts["env"])  # NaN where either is 0

        lr = self.optimizer.param_groups[0]["lr"]
        norm = self.guard.step(loss, self.networks.policy, self.optimizer, "actor", before_clip=measure)
        applied = torch.where(torch.isfinite(norm), lr * (self.grad_clip / (norm + 1e-6)).clamp(max=1.0),
                              torch.zeros_like(norm))  # torch's clip factor; 0 for a skipped step
        shared = parts["model"] + parts["env"]
        out = {"loss/actor": loss.detach(), "grad/actor_norm": norm,
               "model/grad_share": torch.where(shared > 0, parts["model"] / shared, torch.zeros_like(shared)),
               "model/update_norm": applied * parts["model"], "grad/update_norm": applied * norm.nan_to_num(0.0)}
        if model_grad is not None and beta > 0:  # both terms present: do they point the same way?
            out["model/grad_cosine"] = parts["cosine"]
        return out

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
