"""What a real window tells about the run besides its loss: the returns of the episodes that finished in
it (``train/return``) and the env's contact signal (``contact/*``, read by contact-driven schedulers).

Device-side only: the values are read with the other metrics at the end of the iteration.
"""
from __future__ import annotations

from typing import Any

import torch

from ..contracts.env import DiffEnv
from ..contracts.rollout_types import Rollout


class EpisodeReturns:
    """The running undiscounted return of each env's current episode, carried from window to window."""

    def __init__(self, num_envs: int, device: torch.device, dtype: torch.dtype):
        self.running = torch.zeros(num_envs, device=device, dtype=dtype)

    def track(self, rollout: Rollout, finite: torch.Tensor, fresh_episodes: bool,
              metrics: dict[str, Any]) -> None:
        """Add the returns of the episodes that finished in ``rollout`` to ``metrics`` (their mean as
        ``train/return``, their count as ``train/episodes``). ``fresh_episodes``: the estimator started new
        episodes instead of continuing the running ones (:attr:`Estimate.fresh_episodes
        <mbmix_fw.Estimate>`, BPTT), whose returns then start from 0. Episodes that ended in a non-finite
        transition are left out."""
        rewards, done = rollout.rewards.detach(), rollout.done
        episode = torch.zeros_like(self.running) if fresh_episodes else self.running
        total = torch.zeros((), device=episode.device, dtype=episode.dtype)
        count = torch.zeros((), device=episode.device, dtype=torch.long)
        clean = torch.ones_like(done[0])  # the running episode has seen only finite transitions
        for t in range(rollout.steps):
            episode = episode + torch.where(finite[t], rewards[t], torch.zeros_like(rewards[t]))
            clean = clean & finite[t]
            ends = done[t] & clean
            total = total + torch.where(ends, episode, torch.zeros_like(episode)).sum()
            count = count + ends.sum()
            episode = torch.where(done[t], torch.zeros_like(episode), episode)
            clean = clean | done[t]
        self.running = episode
        metrics["train/return"] = total / count.clamp_min(1)
        metrics["train/episodes"] = count


@torch.no_grad()
def contact_metrics(env: DiffEnv, rollout: Rollout, finite: torch.Tensor) -> dict[str, torch.Tensor]:
    """The env's contact stiffness of the window's finite transitions: its mean over steps and envs
    (``contact/stiffness``) and over the envs at the first step (``contact/stiffness_first_step``,
    AHAC's dual update reads it); NaN when no transition is finite. Device scalars."""
    steps, n = rollout.steps, rollout.num_envs
    rows = lambda x: x.detach().reshape(steps * n, x.shape[-1])  # noqa: E731
    stiffness = env.contact_stiffness(rows(rollout.states), rows(rollout.actions),
                                      rows(rollout.next_states)).reshape(steps, n)
    valid = finite & torch.isfinite(stiffness)
    kept = torch.where(valid, stiffness, torch.zeros_like(stiffness))
    weight = valid.to(stiffness.dtype)
    return {"contact/stiffness": kept.sum() / weight.sum(),
            "contact/stiffness_first_step": kept[0].sum() / weight[0].sum()}
