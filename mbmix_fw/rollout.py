"""Differentiable rollouts through a simulator or a world model, shared by every estimator."""
from __future__ import annotations

from typing import Callable, Protocol

import attrs
import torch

from .env import DiffEnv

PolicyFn = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]
"""``policy_fn(obs [N, O], generator) -> action [N, A]`` in ``[-1, 1]``, reparameterised (differentiable)."""

ValueFn = Callable[[torch.Tensor], torch.Tensor]
"""``value_fn(obs [..., O]) -> value [...]``; differentiable w.r.t. ``obs`` (its parameters are not trained by the actor loss)."""


class Dynamics(Protocol):
    """Anything with the env's ``step`` signature: a :class:`DiffEnv` or a :class:`WorldModel`."""

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

    @property
    def done(self) -> torch.Tensor:
        return self.terminated | self.truncated

    @property
    def steps(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_envs(self) -> int:
        return self.rewards.shape[1]

    def detach(self) -> "Rollout":
        return attrs.evolve(
            self,
            **{
                f.name: getattr(self, f.name).detach()
                for f in attrs.fields(Rollout)
                if f.name != "end"
            },
        )


def rollout(
    policy_fn: PolicyFn,
    env: DiffEnv,
    dynamics: Dynamics,
    start: Cursor,
    steps: int,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Roll ``policy_fn`` for ``steps`` steps through ``dynamics`` (rewards, observations, termination
    and resets come from ``env``). Gradients flow from every reward back to the policy parameters and,
    if ``start.state`` requires grad, to the start state.

    Episodes that end inside the window are reset with ``env.reset_done``; the fresh rows carry no
    history, so gradients never cross an episode boundary.
    """
    state, t = start.state, start.t
    columns: dict[str, list[torch.Tensor]] = {k: [] for k in attrs.fields_dict(Rollout) if k != "end"}
    for _ in range(steps):
        obs = env.observe(state)
        action = policy_fn(obs, generator)
        next_state = dynamics.step(state, action, generator)
        reward = env.reward(state, action, next_state)
        terminated = env.terminated(next_state)
        if t is not None:
            t = t + 1
            truncated = (t >= env.episode_length) & ~terminated
        else:
            truncated = torch.zeros_like(terminated)
        done = terminated | truncated
        for name, value in (
            ("obs", obs),
            ("actions", action),
            ("rewards", reward),
            ("next_obs", env.observe(next_state)),
            ("terminated", terminated),
            ("truncated", truncated),
            ("states", state),
            ("next_states", next_state),
        ):
            columns[name].append(value)
        state = env.reset_done(next_state, done, generator)
        if t is not None:
            t = torch.where(done, torch.zeros_like(t), t)
    stacked = {k: torch.stack(v) for k, v in columns.items()}
    return Rollout(**stacked, end=Cursor(state, t).detach())
