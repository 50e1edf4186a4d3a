"""The ``GradientEstimator`` extension point: turns differentiable rollouts into a policy loss."""
from __future__ import annotations

import abc

import attrs
import torch

from .env import DiffEnv
from .rollout_types import Cursor, Dynamics, PolicyFn, Rollout, ValueFn



@attrs.frozen(eq=False)
class EstimatorInput:
    """Everything one policy-loss estimate needs.

    ``policy_fn`` and ``value_fn`` take raw observations (observation normalisation is inside them,
    frozen for the window). ``value_fn`` is the *target* critic: differentiable w.r.t. its input so the
    bootstrap term passes gradient to the policy, but its parameters are never trained by this loss.
    ``dynamics`` is ``env`` itself for simulator rollouts or a world model for model branches; rewards,
    observations, termination and resets always come from ``env``.

    ``horizon`` and ``lam`` are this iteration's :class:`~mbmix_fw.Plan` values (``None``: use the
    configured ones). The trainer has already checked them against ``horizon_bounds`` and ``lam``.
    """

    policy_fn: PolicyFn
    value_fn: ValueFn
    env: DiffEnv
    dynamics: Dynamics
    start: Cursor
    generator: torch.Generator | None = None
    horizon: int | None = None
    lam: float | None = None


@attrs.frozen(eq=False)
class Estimate:
    """A policy loss to *minimise* (already normalised by its number of terms) and the rollout behind it.

    The trainer trains the critic on ``rollout`` (detached) and carries ``rollout.end`` to the next window.
    ``metrics`` values may be floats or 0-d tensors; tensors are best (keep them on the device: the
    trainer reads all of an iteration's metrics in one host–device transfer).

    ``fresh_episodes``: the rollout started new episodes (``env.reset``) instead of continuing from
    ``EstimatorInput.start`` (BPTT through whole episodes), so the trainer counts every env's episode
    return from 0 at the window's start. Declared by the estimator that resets, never guessed from states.
    """

    loss: torch.Tensor
    rollout: Rollout
    metrics: "dict[str, float | torch.Tensor]" = attrs.field(factory=dict)
    fresh_episodes: bool = False


class GradientEstimator(abc.ABC):
    """Estimates the policy gradient as ``∇θ loss`` of a differentiable rollout.

    - ``gamma``: discount, shared with the critic's TD(λ) targets.
    - ``uses_critic``: False for estimators that never bootstrap (BPTT); the trainer then skips
      critic updates.
    - ``horizon(env)``: the configured steps per estimate (window length H), used when a plan sets none.
    - ``horizon_bounds(env)``: the window lengths ``(low, high)`` (inclusive) the estimator honours from
      ``EstimatorInput.horizon``. The default ``(horizon(env), horizon(env))`` is right for an
      estimator that ignores ``EstimatorInput.horizon``: a plan asking for another length is then an
      error, raised by the trainer before any update (and at build time for a scheduler's declared
      ``horizon_range``), never a silently ignored setting.
    - ``horizon_multiple(env)``: the window lengths it honours are also multiples of this (default 1;
      ``mix``: its ``interval``). The build refuses a scheduler whose declared ``horizon_range`` holds
      other lengths, and the last window of an env-step budget is rounded up to a multiple.
    - ``lam``: the λ an estimator mixes windows with, or ``None`` when it has none (a plan setting
      ``lam`` is then an error). An estimator with a λ honours ``EstimatorInput.lam``.

    The trainer counts the steps of the rollout an estimate returns (``env/steps``), so cost accounting
    follows a changing horizon by itself.
    """

    gamma: float = 0.99
    uses_critic: bool = True
    reports: frozenset[str] = frozenset()
    """The metrics its :class:`Estimate` carries every iteration (``Estimate.metrics``), for the schedulers
    that read them (:attr:`Scheduler.reads <mbmix_fw.Scheduler>`)."""
    lam: float | None = None

    @abc.abstractmethod
    def horizon(self, env: DiffEnv) -> int: ...

    def horizon_bounds(self, env: DiffEnv) -> tuple[int, int]:
        h = self.horizon(env)
        return h, h

    def horizon_multiple(self, env: DiffEnv) -> int:
        return 1

    @abc.abstractmethod
    def estimate(self, inp: EstimatorInput) -> Estimate: ...
