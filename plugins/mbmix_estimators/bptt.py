"""Backpropagation through time, the first-order baseline of the SHAC paper (method.md §3.3): through
whole episodes (default) or truncated to windows of ``horizon`` steps like DiffRL's ``bptt.py``.

**Whole episodes** (``horizon`` unset, no plan horizon). Every simulator estimate starts ``N`` fresh episodes (``env.reset(N, generator)``, ``t = 0``; the
trainer's cursor is ignored), rolls ``T = env.episode_length`` steps through the dynamics and
maximises the discounted return with no critic. Model branches (a start cursor with ``t = None``:
states drawn from the replay buffer by the ``dyna`` scheduler) honour their start states instead —
fresh resets there would silently turn "branches from visited states" into "episodes from resets".
The objective:

    loss = -(1/(T·N)) Σ_n Σ_t γ^{t - t_seg} r_t

where ``t_seg`` is the start of the step's episode segment: an episode that terminates early is reset
and the fresh one runs to the end of the window with its own discount, as in DiffRL. This is SHAC's
objective with ``V ≡ 0`` over the whole episode (:func:`mbmix_fw.shac_objective` with zero values).

**Truncated** (``horizon = H`` in the config or this iteration's ``Plan.horizon``; ``1 ≤ H ≤ T``). Like
DiffRL's ``bptt.py`` (``steps_num`` steps): each estimate rolls ``H`` steps from the trainer's cursor —
the states the previous window ended in, detached, so the graph is cut between windows while the
episodes run on — with the same objective normalised by ``H·N``; the discount restarts at each window
start (DiffRL resets its ``gamma`` accumulator per window too) and the window end bootstraps 0.

Long episodes make the autograd graph large; ``checkpoint_segments = k`` recomputes the rollout in
``k`` segments during backward (:func:`mbmix_fw.rollout`), with the same gradient.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

import mbmix_fw as mb

from .shac import window_metrics

if TYPE_CHECKING:
    from . import BpttConfig


class Bptt(mb.GradientEstimator):
    uses_critic = False

    def __init__(self, config: "BpttConfig", ctx: mb.BuildContext | None = None):
        self.config = config
        self.gamma = config.gamma

    def horizon(self, env: mb.DiffEnv) -> int:
        return self.config.horizon if self.config.horizon is not None else env.episode_length

    def horizon_bounds(self, env: mb.DiffEnv) -> tuple[int, int]:
        return 1, env.episode_length

    def estimate(self, inp: mb.EstimatorInput) -> mb.Estimate:
        env, n = inp.env, inp.start.state.shape[0]
        truncate = inp.horizon if inp.horizon is not None else self.config.horizon
        fresh = inp.start.t is not None and truncate is None
        if not fresh:
            start = inp.start  # a model branch's buffer states, or the cursor a truncated window carries on
        else:
            start = mb.Cursor(env.reset(n, inp.generator), torch.zeros(n, dtype=torch.long, device=env.device))
        steps = truncate if truncate is not None else env.episode_length
        window = mb.rollout(
            inp.policy_fn, env, inp.dynamics, start, steps, inp.generator,
            checkpoint_segments=self.config.checkpoint_segments,
        )
        no_critic = torch.zeros_like(window.rewards)
        per_env = mb.shac_objective(window.rewards, no_critic, window.terminated, window.done, self.gamma)
        loss = mb.masked_actor_loss(per_env, window, inp.env)  # / (T·N); diverged envs left out
        return mb.Estimate(loss, window, window_metrics(window, loss), fresh_episodes=fresh)
