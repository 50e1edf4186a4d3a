"""Window objectives of first-order policy gradients: SHAC's truncated return and MB-MIX's λ-mixture.

All functions are pure, differentiable in every float input, and take one rollout window of ``T``
steps for ``N`` envs (tensors ``[T, N]``, as in :class:`mbmix_fw.Rollout`):

- ``rewards``: ``r_t``; ``next_values``: ``V(s_{t+1})`` of the state reached by step ``t`` *before* any
  reset (the target critic's value of ``rollout.next_obs``);
- ``terminated`` / ``done`` (bool): the episode ends at ``t+1`` by failure/success / by either
  failure or time-limit truncation.

**Segments.** An episode that ends inside the window splits it into segments; each segment is an
independent short-horizon problem started at its first step (``t = 0`` or the step after a
``done``), exactly like SHAC's actor loss, which resets its reward accumulator and discount per env on
``done``. The bootstrap at the end of a segment is ``V_boot = 0`` if terminated and ``V(s_{t+1})``
(before reset) if truncated or cut by the window end. No gradient crosses a segment boundary because
the rollout resets done rows with fresh, detached states.

**SHAC (Xu et al. 2022), method.md §1.3(a).** A segment starting at state ``s_0`` with ``L`` steps
contributes ``J_L = Σ_{h<L} γ^h r_h + γ^L V_boot(s_L)``.

**MB-MIX (arXiv 2503.01178), method.md §1.3(b) — truncation and Δ are our reconstruction.**
``J^mix = Σ_{H=1}^{H_max-1} (1-λ) λ^{H-1} J_H + λ^{H_max-1} J_{H_max}``: the paper's infinite mixture
``(1-λ) Σ_H λ^{H-1} J_H`` truncated with the tail mass on ``H_max`` so the weights sum to 1 (ours). One
rollout of length ``H_max`` yields every ``J_H``; the mixture is the λ-return recursion

    ``G_t = r_t + γ [(1-λ) V(s_{t+1}) + λ G_{t+1}]``, ``G_t = r_t + γ V_boot(s_{t+1})`` at segment ends.

*Mix interval* ``Δ`` (ours; a summary of the paper names a "mix interval" without defining it): only
``H ∈ {Δ, 2Δ, …}`` are mixed, with weight ``(1-λ) λ^{k-1}`` on ``H = kΔ`` and the tail on the last
length. In the recursion the stop coefficient ``(1-λ)`` applies only at offsets from the segment start
that are multiples of ``Δ`` (elsewhere ``G_t = r_t + γ G_{t+1}``). λ = 1 is SHAC with horizon
``H_max``; λ = 0 is the ``Δ``-step objective (one-step ``r_0 + γ V(s_1)`` for ``Δ = 1``).
"""
from __future__ import annotations

from typing import Literal

import torch

StartTimes = Literal["first", "all"]


def bootstrap_values(next_values: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
    """``V(s_{t+1})`` with terminal states worth 0 (termination bootstraps 0; truncation keeps V)."""
    return torch.where(terminated, torch.zeros_like(next_values), next_values)


def mix_weights(lam: float, horizon: int, interval: int = 1) -> torch.Tensor:
    """Weights ``w[H-1]`` of ``J_H`` for ``H = 1 … horizon`` in the truncated mixture (float64 ``[horizon]``).

    ``w = (1-λ) λ^{k-1}`` at ``H = kΔ < horizon``, the tail ``λ^{K-1}`` at ``H = horizon = KΔ``, 0
    at lengths that are not multiples of ``Δ``. They sum to 1 for every λ in [0, 1]. ``interval`` must
    divide ``horizon``.
    """
    if horizon < 1 or interval < 1 or horizon % interval:
        raise ValueError(f"interval {interval} must be >= 1 and divide horizon {horizon} (>= 1)")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    weights = torch.zeros(horizon, dtype=torch.float64)
    count = horizon // interval
    for k in range(1, count + 1):
        weights[k * interval - 1] = (1.0 - lam) * lam ** (k - 1) if k < count else lam ** (count - 1)
    return weights


def segment_offsets(done: torch.Tensor) -> torch.Tensor:
    """Steps since the start of each step's segment (long ``[T, N]``): 0 at ``t = 0`` and after a ``done``.

    Vectorised (a running maximum of segment-start indices), so it launches a handful of kernels
    whatever ``T`` is and never reads the device from the host.
    """
    steps = torch.arange(done.shape[0], device=done.device).unsqueeze(-1).expand(done.shape)
    starts = torch.zeros(done.shape, dtype=torch.bool, device=done.device)
    starts[1:] = done[:-1]
    last_start = torch.where(starts, steps, torch.zeros_like(steps)).cummax(0).values
    return steps - last_start


def shac_objective(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Per env, the sum over the window's segments of ``J_L = Σ_{h<L} γ^h r_h + γ^L V_boot`` (``[N]``).

    Written as SHAC's forward accumulation (running reward sum and discount, reset per env on
    ``done``) rather than through :func:`mixed_returns`, so the two implementations check each other
    (λ = 1 must agree). SHAC's actor loss is ``-shac_objective(...).sum() / (T·N)``.
    """
    boot = bootstrap_values(next_values, terminated)
    steps = rewards.shape[0]
    acc = torch.zeros_like(rewards[0])
    discount = torch.ones_like(rewards[0])
    total = torch.zeros_like(rewards[0])
    for t in range(steps):
        acc = acc + discount * rewards[t]
        discount = discount * gamma
        ends = done[t] if t < steps - 1 else torch.ones_like(done[t])
        total = total + torch.where(ends, acc + discount * boot[t], torch.zeros_like(acc))
        acc = torch.where(done[t], torch.zeros_like(acc), acc)
        discount = torch.where(done[t], torch.ones_like(discount), discount)
    return total


def mixed_returns(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    lam: float,
    interval: int = 1,
) -> torch.Tensor:
    """The backward λ-recursion ``G_t`` (``[T, N]``) of the module docstring, with mix interval ``Δ``.

    ``G_t`` at a segment start is that segment's ``J^mix``; elsewhere it is the mixture's
    continuation from ``t``. The stop coefficient ``(1-λ)`` at ``t+1`` applies only when the offset
    of ``t+1`` from the segment start is a multiple of ``interval``. With ``interval = 1`` this is
    :func:`mbmix_fw.lambda_returns`.
    """
    boot = bootstrap_values(next_values, terminated)
    may_stop = (segment_offsets(done) + 1) % interval == 0  # stopping after step t is a candidate H
    steps = rewards.shape[0]
    out = [None] * steps
    g = rewards[-1] + gamma * boot[-1]
    out[-1] = g
    for t in reversed(range(steps - 1)):
        mixed = torch.where(may_stop[t], (1.0 - lam) * boot[t] + lam * g, g)
        g = rewards[t] + gamma * torch.where(done[t], boot[t], mixed)
        out[t] = g
    return torch.stack(out)


def mix_objective(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    lam: float,
    interval: int = 1,
    start_times: StartTimes = "first",
) -> torch.Tensor:
    """Per env, the sum of ``G`` over start times (``[N]``); the mix actor loss is ``-(·).sum() / (T·N)``.

    ``start_times="first"`` (default, SHAC's choice): one start per segment, so λ = 1 gives exactly
    :func:`shac_objective`. ``"all"`` (ours, like Dreamer's actor objective): every step of the
    window is a start time; only defined for ``interval = 1`` (with ``Δ > 1`` the candidate lengths
    would depend on where a start lies relative to the segment start).
    """
    if start_times == "all" and interval != 1:
        raise ValueError("start_times='all' needs interval=1")
    returns = mixed_returns(rewards, next_values, terminated, done, gamma, lam, interval)
    if start_times == "all":
        return returns.sum(0)
    starts = segment_offsets(done) == 0
    return torch.where(starts, returns, torch.zeros_like(returns)).sum(0)
