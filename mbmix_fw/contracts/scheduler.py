"""The ``Scheduler`` extension point: what each training iteration does, and scheduled hyper-parameters."""
from __future__ import annotations

import abc

import attrs




@attrs.frozen
class Plan:
    """One iteration's phases, in the order the trainer runs them.

    1. A real rollout through the simulator always runs (it advances the env and feeds the buffer).
       Its policy loss enters with weight ``env_weight`` (β); at β = 0 it runs without a graph.
    2. ``model_branches`` start states are drawn from the replay buffer and rolled out through the
       world model; that loss enters with weight ``1 - env_weight``. Needs a world model.
    3. One policy step on ``β·L_env + (1-β)·L_model``.
    4. ``critic_iterations`` passes of critic regression on the TD(λ) targets of both rollouts.
    5. ``model_fit_steps`` minibatch steps of world-model fitting on the buffer.

    ``actor_lr_scale`` / ``critic_lr_scale`` multiply the recipe's learning rates this iteration.
    ``jacobian_blend`` = w > 0 rolls the real window out with the simulator's values but backpropagates
    through ``w·∂model + (1−w)·∂simulator`` (:mod:`mbmix_fw.maths.jacobian_blend`); needs a world model.
    """

    env_weight: float = 1.0
    model_branches: int = 0
    model_fit_steps: int = 0
    critic_iterations: int | None = None
    actor_lr_scale: float = 1.0
    critic_lr_scale: float = 1.0
    jacobian_blend: float = 0.0

    def __attrs_post_init__(self) -> None:
        if not 0.0 <= self.env_weight <= 1.0:
            raise ValueError(f"env_weight must lie in [0, 1], got {self.env_weight}")
        if not 0.0 <= self.jacobian_blend <= 1.0:
            raise ValueError(f"jacobian_blend must lie in [0, 1], got {self.jacobian_blend}")


class Scheduler(abc.ABC):
    """Decides each iteration's :class:`Plan` (``iteration`` counts from 0 to ``total - 1``)."""

    @abc.abstractmethod
    def plan(self, iteration: int, total: int) -> Plan: ...
