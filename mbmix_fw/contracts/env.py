"""The ``DiffEnv`` extension point: a batch of differentiable environments with a functional core."""
from __future__ import annotations

import abc

from typing import TYPE_CHECKING

import attrs
import torch

if TYPE_CHECKING:
    from .particles import ParticleLayout


@attrs.frozen(eq=False)
class Transition:
    """What one step of a batch produces: the reached state and everything the env says about it.

    ``next_state [N, S]``, ``reward [N]``, ``terminated`` (bool ``[N]``) and ``next_obs [N, O]`` of the
    state reached *before* any reset. Returned by :meth:`DiffEnv.transition` (simulator steps) and
    :meth:`DiffEnv.score` (steps predicted by a world model), so a simulator behind a bridge (JAX, Warp)
    can produce all four in one crossing instead of four.
    """

    next_state: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    next_obs: torch.Tensor


class DiffEnv(abc.ABC):
    """A batch of ``num_envs`` differentiable environments, functional so a learned model can stand in.

    The environment holds no per-episode state: the trainer owns the batch state and passes it in.
    That is what lets one estimator roll out the simulator or a :class:`~mbmix_fw.WorldModel`
    with the same code, and what makes Jacobians of ``step`` well defined.

    Every method accepts any leading batch size ``N`` (``num_envs`` is the training batch; evaluation
    and model branches use others). Contract (``S = state_dim``, ``A = action_dim``, ``O = obs_dim``):

    - ``state`` is a flat float tensor ``[N, S]`` on ``device``. The env decides what it holds
      (pendulum: angle and angular velocity; Brax: ``concat(q, qd)``; cloth: particle positions and
      velocities). A flat state is what a world model learns and what Jacobians are taken of.
    - ``step(state, action, generator)`` → next state ``[N, S]``, differentiable w.r.t. both
      ``state`` and ``action``; actions are in ``[-1, 1]^A`` (the env scales them). Process noise, if
      any, is drawn from ``generator`` so runs replay exactly; ``generator=None`` means noise-free.
    - ``reward(state, action, next_state)`` → ``[N]``, differentiable; known analytically, so model
      rollouts can score predicted states.
    - ``observe(state)`` → ``[N, O]``, differentiable.
    - ``terminated(state)`` → bool ``[N]`` (failure / goal); time-limit truncation at
      ``episode_length`` is handled by the rollout, not by the env.
    - ``reset(n, generator)`` → ``[n, S]`` fresh, detached initial states.

    Because Jacobian probes for Sobolev training are ``torch.autograd.grad(step(s, a), (s, a), u)``,
    an env whose ``step`` is differentiable gets them for free, whatever runs inside.

    A non-torch simulator (JAX, warp, NumPy) crosses into torch through the public bridge
    :class:`mb.ExternalFunction <mbmix_fw.maths.bridge.ExternalFunction>`; how each built-in plugin does it is
    in its own module docstrings (``plugins/mbmix_brax/bridge.py``, ``plugins/mbmix_warp/bridge.py``,
    ``plugins/mbmix_newton/``), not part of this contract.
    """

    num_envs: int
    state_dim: int
    obs_dim: int
    action_dim: int
    episode_length: int
    device: torch.device
    is_simulator: bool = True
    """As a rollout's dynamics, this env's ``step`` is the simulator's: the rollout calls :meth:`transition`
    (:class:`~mbmix_fw.Dynamics`). An env whose ``transition`` must not stand in for ``step`` sets False."""
    diverged_magnitude: float = 1e6
    """The bound of a healthy observation: a transition whose observation has an entry beyond it in magnitude
    counts as a diverged simulator (ended like a termination, kept out of the critic, the buffer and the
    model, and its env's window masked out of the actor objective). The default is DiffRL's absolute 1e6,
    which suits nothing in particular: an env whose observations live on a known scale declares a bound a
    few orders of magnitude above it (cloth: positions in metres and velocities in m/s, so a cloth at 1e5 is
    diverged long before 1e6), so a blow-up is caught while it is still finite and far from the float range."""

    @abc.abstractmethod
    def reset(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fresh initial states ``[n, S]`` (detached)."""

    @abc.abstractmethod
    def step(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Next states ``[N, S]``, differentiable w.r.t. ``state`` and ``action``."""

    @abc.abstractmethod
    def reward(self, state: torch.Tensor, action: torch.Tensor, next_state: torch.Tensor) -> torch.Tensor:
        """Rewards ``[N]`` of the transitions, differentiable."""

    @abc.abstractmethod
    def observe(self, state: torch.Tensor) -> torch.Tensor:
        """Observations ``[N, O]`` of the states, differentiable."""

    def terminated(self, state: torch.Tensor) -> torch.Tensor:
        """Bool ``[N]``: the episode ends in failure or success at this state. Default: never."""
        return torch.zeros(state.shape[0], dtype=torch.bool, device=state.device)

    def score(self, state: torch.Tensor, action: torch.Tensor, next_state: torch.Tensor) -> Transition:
        """Reward, termination and observation of ``next_state`` reached from ``state`` by ``action``.

        The rollout calls this for transitions it did not get from :meth:`transition` (world-model
        branches). The default calls :meth:`reward`, :meth:`terminated` and :meth:`observe`; an env
        whose methods each cross a bridge may override it with one fused call. Must agree with them.
        """
        return Transition(
            next_state=next_state,
            reward=self.reward(state, action, next_state),
            terminated=self.terminated(next_state),
            next_obs=self.observe(next_state),
        )

    def transition(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> Transition:
        """One simulator step and its score: what the rollout calls when its dynamics declares
        ``is_simulator`` (the env itself).

        The default is :meth:`step` followed by :meth:`score`; overriding it (one jitted call for the
        physics, reward, termination and observation) is an optimisation, never a change of meaning.
        """
        return self.score(state, action, self.step(state, action, generator))

    def reset_done(
        self, state: torch.Tensor, done: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``state`` with the rows where ``done`` is set replaced by fresh initial states.

        Rows that are not reset keep their autograd history.

        Draws ``reset(N)`` at every call, whether or not a row is done: testing ``done.any()`` first
        would make the host wait for the device at every rollout step (the dominant cost of a GPU
        iteration at small batch sizes). The price is one ``reset`` per step and a generator stream
        that advances every step. An env whose ``reset`` is expensive may override this method.
        """
        fresh = self.reset(state.shape[0], generator).to(state.dtype)
        return torch.where(done.unsqueeze(-1), fresh, state)

    def reset_done_observed(
        self, next_state: torch.Tensor, next_obs: torch.Tensor, done: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The states the next step starts from and their observations: :meth:`reset_done` of ``next_state``,
        with ``next_obs`` (the transition's own observation, graph included) kept for the rows not reset.

        Why: the rollout would otherwise call :meth:`observe` on states whose observation the transition
        has just returned -- for an env behind a bridge (JAX, Warp), one more crossing per step forward and
        backward. The default observes the returned states without autograd (the reset rows are fresh and
        carry no history) and selects; an env that gets observations with its reset states may override
        it so that nothing is observed twice. ``next_obs`` must be the observation of ``next_state`` (the
        contract of :meth:`transition` and :meth:`score`).
        """
        state = self.reset_done(next_state, done, generator)
        with torch.no_grad():
            fresh_obs = self.observe(state.detach())
        return state, torch.where(done.unsqueeze(-1), fresh_obs.to(next_obs.dtype), next_obs)

    def particle_layout(self) -> "ParticleLayout | None":
        """Optional: where this env's particles are in the flat state (:class:`~mbmix_fw.ParticleLayout`).

        Cloth, rope and soft-body envs override it so a particle world model (``particle_gnn``) can share
        one network across particles: the position and velocity slices, the spring pairs, the particles
        the action drives exactly and how. Default ``None``: the env is not a particle system, and a
        particle model refuses it when the run is built. The layout is checked against ``state_dim``
        then (:func:`mbmix_fw.checked_particle_layout`).
        """
        return None

    def exact_policy_gradient(self, policy, gamma: float):  # pragma: no cover - optional
        """Optional: the exact gradient of the expected return w.r.t. ``policy.parameters()``.

        Study envs (LQR, tabular MDP) implement it so ``mbmix-fw diagnose variance`` can report bias.
        Returns a list of tensors shaped like the parameters, or ``None`` when unknown.

        Contract for implementers: the objective is one episode from the reset distribution,
        ``E[Σ_{t<T} γ^t r_t]`` with ``T = episode_length`` (what full-episode BPTT estimates), with
        ``policy`` acting on raw observations (observation normalisation off); the gradients come in
        the order of ``list(policy.parameters())``, in float64. A policy whose form the env cannot
        differentiate exactly raises :class:`~mbmix_fw.UserError` saying which form is supported.
        """
        return None

    def contact_stiffness(self, state: torch.Tensor, action: torch.Tensor,
                          next_state: torch.Tensor) -> torch.Tensor | None:  # pragma: no cover - optional
        """Optional contact signal: per transition, how stiff the contacts were, ``[N]`` floats ≥ 0 (no
        gradient needed), or ``None`` (the default) when the env reports none.

        AHAC's measure (Georgiev et al., ICML 2024; DiffRL ``ahac.py``): the contact forces divided
        elementwise by the accelerations they act on, floored at 1 m/s², then the Frobenius norm over
        contact points and axes: ``‖F_contact / max(|a|, 1)‖``. Units: force over acceleration, i.e.
        kilograms -- large when big contact forces move the body little (stiff contact, where
        first-order gradients through the simulator are least reliable). Implementations document
        which contacts they count and at which point of the step the forces are evaluated.

        The trainer calls it on the real window's detached transitions (flattened to ``[T·N]`` rows),
        and only when the scheduler asks for it (``Scheduler.needs_contact``); it logs the mean as
        ``contact/stiffness``. A scheduler that needs it on an env without it fails at build time with
        a one-line error naming the env (:func:`reports_contact`).
        """
        return None


def reports_contact(env: DiffEnv) -> bool:
    """Whether ``env`` implements the optional :meth:`DiffEnv.contact_stiffness` signal (an env whose
    class has it but whose configuration cannot provide it sets the instance attribute to ``None``)."""
    method = getattr(env, "contact_stiffness", None)
    return callable(method) and getattr(method, "__func__", None) is not DiffEnv.contact_stiffness
