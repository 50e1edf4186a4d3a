"""The ``GradientEstimator`` extension point: turns differentiable rollouts into a policy loss."""
from __future__ import annotations

import abc

import attrs
import torch

from .env import DiffEnv
from .rollout import Cursor, Dynamics, PolicyFn, Rollout, ValueFn



@attrs.frozen(eq=False)
class EstimatorInput:
    """Everything one policy-loss estimate needs.

    ``policy_fn`` and ``value_fn`` take raw observations (observation normalisation is inside them,
    frozen for the window). ``value_fn`` is the *target* critic: differentiable w.r.t. its input so the
    bootstrap term passes gradient to the policy, but its parameters are never trained by this loss.
    ``dynamics`` is ``env`` itself for simulator rollouts or a world model for model branches; rewards,
    observations, termination and resets always come from ``env``.
    """

    policy_fn: PolicyFn
    value_fn: ValueFn
    env: DiffEnv
    dynamics: Dynamics
    start: Cursor
    generator: torch.Generator | None = None


@attrs.frozen(eq=False)
class Estimate:
    """A policy loss to *minimise* (already normalised by its number of terms) and the rollout behind it.

    The trainer trains the critic on ``rollout`` (detached) and carries ``rollout.end`` to the next window.
    ``metrics`` values may be floats or 0-d tensors; tensors are best (keep them on the device: the
    trainer reads all of an iteration's metrics in one host–device transfer).
    """

    loss: torch.Tensor
    rollout: Rollout
    metrics: "dict[str, float | torch.Tensor]" = attrs.field(factory=dict)


class GradientEstimator(abc.ABC):
    """Estimates the policy gradient as ``∇θ loss`` of a differentiable rollout.

    - ``gamma``: discount, shared with the critic's TD(λ) targets.
    - ``uses_critic``: False for estimators that never bootstrap (BPTT); the trainer then skips
      critic updates.
    - ``horizon(env)``: steps per estimate, used for cost accounting and buffer sizing.
    """

    gamma: float = 0.99
    uses_critic: bool = True

    @abc.abstractmethod
    def horizon(self, env: DiffEnv) -> int: ...

    @abc.abstractmethod
    def estimate(self, inp: EstimatorInput) -> Estimate: ...
