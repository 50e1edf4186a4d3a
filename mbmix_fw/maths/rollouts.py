"""Differentiable rollouts through a simulator or a world model, shared by every estimator."""
from __future__ import annotations

import torch

from ..contracts.env import DiffEnv
from ..contracts.rollout_types import COLUMNS, Cursor, Dynamics, PolicyFn, Rollout, ValueFn  # noqa: F401 - re-exported
from .ranks import rank_count, sum_over_ranks

DIVERGED_MAGNITUDE = 1e6
"""The default of :attr:`DiffEnv.diverged_magnitude <mbmix_fw.DiffEnv>` (DiffRL's SHAC zeroes the bootstrap
value of an ``obs_before_reset`` that is non-finite or exceeds 1e6 in magnitude); an env declares its own."""


def diverged(reward: torch.Tensor, next_state: torch.Tensor, next_obs: torch.Tensor,
             bound: float = DIVERGED_MAGNITUDE) -> torch.Tensor:
    """Bool ``[...]`` (the leading shape of ``reward``): the step's reward, reached state or observation is
    non-finite, or an observation entry exceeds ``bound`` (the env's ``diverged_magnitude``) in magnitude.
    The rollout ends such episodes like a termination (bootstrap value 0, as DiffRL does, and a reset), so the
    batch never carries a broken state into the next step."""
    with torch.no_grad():
        bad = ~torch.isfinite(reward) | ~torch.isfinite(next_state).all(-1) | ~torch.isfinite(next_obs).all(-1)
        return bad | (next_obs.abs() > bound).any(-1)


def healthy_envs(window: Rollout, env: DiffEnv) -> torch.Tensor:
    """Bool ``[N]``: the env's whole window is finite (:attr:`Rollout.finite`) and no transition in it
    diverged (:func:`diverged` with the env's bound). Computed on the device, without a host read."""
    with torch.no_grad():
        bound = getattr(env, "diverged_magnitude", DIVERGED_MAGNITUDE)
        broken = diverged(window.rewards, window.next_states, window.next_obs, bound) | ~window.finite
        return ~broken.any(0)


def masked_actor_loss(per_env: torch.Tensor, window: Rollout, env: DiffEnv) -> torch.Tensor:
    """The actor loss to minimise from a per-env objective ``per_env [N]`` (to maximise) over ``window``:
    ``-Σ_{healthy n} per_env[n] / (T · #healthy)``, so one diverged env does not stop the others training.

    A diverged env's window (:func:`healthy_envs`) is left out of the sum with ``torch.where``, so its NaN
    never reaches the loss. Its gradient is cut where it would reach the policy: the trainer's policy zeroes
    the action-gradient rows that come back non-finite (``0 · NaN = NaN`` through a NaN state's Jacobian,
    or a simulator whose backward is NaN) — see ``DivergenceGuard.gate_action_grads``. When no env is healthy the loss is
    NaN and the trainer skips (and counts) the actor step. With every env healthy it is exactly
    ``-per_env.sum() / (T·N)``, SHAC's normalisation.

    Data-parallel (K ranks, gradients averaged): the healthy count is the union's (summed over ranks) and
    each rank's loss is scaled by K, so the averaged gradient is that of the mean over every healthy env of
    every rank, and a rank with no healthy env contributes zero instead of making every rank skip; the loss
    is NaN only when no rank has a healthy env.
    """
    healthy = healthy_envs(window, env)
    count = sum_over_ranks(healthy.sum())
    total = torch.where(healthy, per_env, torch.zeros_like(per_env)).sum()
    ranks = rank_count()
    loss = -(total if ranks == 1 else total * ranks) / (window.steps * count.clamp_min(1))
    return torch.where(count > 0, loss, torch.full_like(loss, float("nan")))


def rollout(
    policy_fn: PolicyFn,
    env: DiffEnv,
    dynamics: Dynamics,
    start: Cursor,
    steps: int,
    generator: torch.Generator | None = None,
    *,
    checkpoint_segments: int = 0,
) -> Rollout:
    """Roll ``policy_fn`` for ``steps`` steps through ``dynamics`` (rewards, observations, termination
    and resets come from ``env``; a dynamics that declares ``is_simulator``, the env itself, is stepped with
    the env's fused ``transition``). Gradients flow from every reward back to the policy parameters and,
    if ``start.state`` requires grad, to the start state.

    Episodes that end inside the window are reset with ``env.reset_done_observed``; the fresh rows carry
    no history, so gradients never cross an episode boundary. The policy's observation at a step is the
    previous transition's ``next_obs`` (the env observes only the window's first states and reset rows).

    ``checkpoint_segments = k > 0`` trades compute for memory on long windows (BPTT through whole
    episodes): the window is cut into ``k`` segments run under ``torch.utils.checkpoint``, so only each
    segment's inputs and the per-step outputs are kept, and a segment's internals (policy and
    simulator activations) are recomputed during backward. ``generator``'s state is recorded at each
    segment start and replayed during recomputation (then restored), so the recomputed actions, noise
    and resets are those of the forward pass and the gradient is exactly the one without checkpointing.
    Without autograd (``torch.no_grad``) it has no effect.
    """
    bound = getattr(env, "diverged_magnitude", DIVERGED_MAGNITUDE)
    if checkpoint_segments <= 0 or not torch.is_grad_enabled() or steps <= 1:
        columns, state, t = _roll_steps(policy_fn, env, dynamics, start.state, start.t, steps, generator)
        return Rollout(**columns, end=Cursor(state, t).detach(), diverged_magnitude=bound)
    from torch.utils.checkpoint import checkpoint

    size = -(-steps // min(checkpoint_segments, steps))  # ceil: segments of equal length but the last
    state, t, pieces = start.state, start.t, []
    for begin in range(0, steps, size):
        run = _replaying_segment(policy_fn, env, dynamics, min(size, steps - begin), generator)
        columns, state, t = checkpoint(run, state, t, use_reentrant=False)
        pieces.append(columns)
    stacked = {k: torch.cat([p[k] for p in pieces]) for k in pieces[0]}
    return Rollout(**stacked, end=Cursor(state, t).detach(), diverged_magnitude=bound)


def _replaying_segment(policy_fn, env, dynamics, steps, generator):
    """A checkpointable segment: its first call runs forward; later calls (recomputation during
    backward) replay ``generator`` from the state it had when the segment was created."""
    recorded = generator.get_state() if generator is not None else None
    calls = 0

    def run(state, t):
        nonlocal calls
        replay, calls = calls > 0, calls + 1
        # A new tensor object at every segment start, in the forward and in the recomputation alike: an env
        # cache keyed on the state tensor itself (Brax's carried pipeline state) must not let the forward
        # reach into the previous segment's graph while the recomputation cannot (torch's checkpoint then
        # refuses the recomputed graph as different).
        state = state.view_as(state)
        if not replay or generator is None:
            return _roll_steps(policy_fn, env, dynamics, state, t, steps, generator)
        resume = generator.get_state()
        generator.set_state(recorded)
        try:
            return _roll_steps(policy_fn, env, dynamics, state, t, steps, generator)
        finally:
            generator.set_state(resume)

    return run


def _roll_steps(policy_fn, env, dynamics, state, t, steps, generator):
    """The rollout loop: per-step columns stacked ``[steps, N, ·]``, and the state and time after it."""
    columns: dict[str, list[torch.Tensor]] = {k: [] for k in COLUMNS}
    bound = getattr(env, "diverged_magnitude", DIVERGED_MAGNITUDE)
    simulator = bool(getattr(dynamics, "is_simulator", False))  # declared (contracts/rollout_types.py, Dynamics)
    obs = env.observe(state)  # later steps reuse the transition's observation (DiffEnv.reset_done_observed)
    for _ in range(steps):
        action = policy_fn(obs, generator)
        if simulator:  # the simulator: one fused call where the env provides it
            step = env.transition(state, action, generator)
        else:  # a world model predicts the state, the env scores it
            step = env.score(state, action, dynamics.step(state, action, generator))
        next_state, reward = step.next_state, step.reward
        # A diverged transition (non-finite or absurd) ends its episode as a termination: value 0, reset.
        terminated = step.terminated | diverged(reward, next_state, step.next_obs, bound)
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
            ("next_obs", step.next_obs),
            ("terminated", terminated),
            ("truncated", truncated),
            ("states", state),
            ("next_states", next_state),
        ):
            columns[name].append(value)
        state, obs = env.reset_done_observed(next_state, step.next_obs, done, generator)
        if t is not None:
            t = torch.where(done, torch.zeros_like(t), t)
    return {k: torch.stack(v) for k, v in columns.items()}, state, t
