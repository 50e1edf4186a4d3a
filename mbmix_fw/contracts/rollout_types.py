"""The data a rollout produces and the callables it runs: the vocabulary of the estimator contract.

These types sit in :mod:`mbmix_fw.contracts` because estimators, world models and the trainer all speak
them; the rollout loop itself is maths (:mod:`mbmix_fw.maths.rollouts`).
"""
from __future__ import annotations

import math
from typing import Callable, Protocol

import attrs
import torch


PolicyFn = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]
"""``policy_fn(obs [N, O], generator) -> action [N, A]`` in ``[-1, 1]``, reparameterised (differentiable)."""

ValueFn = Callable[[torch.Tensor], torch.Tensor]
"""``value_fn(obs [..., O]) -> value [...]``; differentiable w.r.t. ``obs`` (its parameters are not trained by the actor loss)."""


class Dynamics(Protocol):
    """Anything with the env's ``step`` signature: a :class:`DiffEnv` or a :class:`WorldModel`.

    ``is_simulator`` (optional, False when absent) declares that ``step`` *is* the rollout env's own
    simulator step, unchanged: the rollout then calls ``env.transition`` (the step and its score in one
    call, which an env may fuse) in its place, instead of ``env.score(state, action, dynamics.step(...))``.
    A :class:`DiffEnv` declares it (as the dynamics of its own rollouts: a rollout's dynamics is its env or
    a model of it); a world model, or a wrapper that acts on the step (the adjoint tap, the Jacobian
    blend), does not. Declared rather than read from ``dynamics is env``, so a wrapper says which it is.
    """

    def step(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor: ...


@attrs.frozen(eq=False)
class Cursor:
    """Where a batch of episodes stands: states ``[N, S]`` and steps taken in the episode ``[N]``.

    ``t is None`` means no time limit applies (model branches started from buffer states).
    """

    state: torch.Tensor
    t: torch.Tensor | None

    def detach(self) -> "Cursor":
        return Cursor(self.state.detach(), None if self.t is None else self.t.clone())


@attrs.frozen(eq=False)
class Rollout:
    """A window of ``T`` steps for ``N`` envs. Tensors keep their autograd graph.

    ``next_obs`` / ``next_states`` are those of the state reached by step ``t`` *before* any reset, so
    truncated episodes can bootstrap ``V(obs_before_reset)``. ``terminated`` / ``truncated`` refer to that
    reached state; after a done row the rollout continues from a fresh initial state.
    """

    obs: torch.Tensor  # [T, N, O]
    actions: torch.Tensor  # [T, N, A]
    rewards: torch.Tensor  # [T, N]
    next_obs: torch.Tensor  # [T, N, O]
    terminated: torch.Tensor  # [T, N] bool
    truncated: torch.Tensor  # [T, N] bool
    states: torch.Tensor  # [T, N, S]
    next_states: torch.Tensor  # [T, N, S]
    end: Cursor  # detached cursor after the last step (after resets)
    diverged_magnitude: float = math.inf
    """The env's bound on observations (``DiffEnv.diverged_magnitude``): a transition whose observation
    exceeds it diverged, exactly as if it were NaN (:attr:`finite`). :func:`mbmix_fw.rollout` sets it."""

    @property
    def done(self) -> torch.Tensor:
        return self.terminated | self.truncated

    @property
    def finite(self) -> torch.Tensor:
        """Bool ``[T, N]``: every number of the transition (observations, action, reward, states) is finite
        and no observation exceeds :attr:`diverged_magnitude` — a diverged-but-finite transition is as broken
        as a NaN one.

        The trainer feeds only these rows to the observation normaliser, the critic, the replay buffer and
        the world model; the others are counted (``guard/nonfinite_transitions``). Computed on the device.
        """
        rows = torch.isfinite(self.rewards.detach())
        for column in (self.obs, self.actions, self.next_obs, self.states, self.next_states):
            rows = rows & torch.isfinite(column.detach()).all(-1)
        if math.isfinite(self.diverged_magnitude):
            for column in (self.obs, self.next_obs):
                rows = rows & (column.detach().abs() <= self.diverged_magnitude).all(-1)
        return rows

    @property
    def steps(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_envs(self) -> int:
        return self.rewards.shape[1]

    def first(self, steps: int) -> "Rollout":
        """Its first ``steps`` steps (TD(λ) targets then bootstrap at the cut; ``end`` is kept as it was)."""
        return attrs.evolve(self, **{name: getattr(self, name)[:steps] for name in COLUMNS})

    def detach(self) -> "Rollout":
        return attrs.evolve(
            self,
            **{
                name: getattr(self, name).detach() for name in COLUMNS
            },
        )


COLUMNS = tuple(f.name for f in attrs.fields(Rollout) if f.name not in ("end", "diverged_magnitude"))
"""The per-step tensors ``[T, N, ...]`` of a :class:`Rollout` (its fields but the end cursor and the bound)."""
