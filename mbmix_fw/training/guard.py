"""The divergence guard: every update goes through it, so a NaN or inf never reaches a parameter, every
skip is counted, and a run that cannot recover stops with one message naming what went non-finite first.

Why one object: the actor's and critic's optimiser steps, the world model's fits and the simulator's
masked transitions all feed the same per-iteration report, the same skip streaks and the same
checkpoint counters. The checks stay on the device (the finite flag goes to the fused Adam kernel as
``found_inf``), and the per-iteration counts are read once, with the other metrics.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import TrainingDiverged
from .progress import SkippedUpdates
from ..maths.ranks import any_rank, sum_over_ranks

UPDATE_KINDS = ("actor", "critic", "world model")


class DivergenceGuard:
    """Guarded optimiser steps, the action-gradient gate, skip counting and the stop rule.

    ``grad_sync`` is called with the module after every ``backward``, before clipping: data-parallel
    training averages gradients across ranks there (mbmix_fw/distributed/ddp.py). ``backward`` runs even
    for a non-finite loss, so every rank takes part in each all-reduce and then skips the same update.
    """

    def __init__(self, device: torch.device, grad_clip: float, max_skipped_iterations: int):
        self.device, self.grad_clip, self.max_skipped_iterations = device, grad_clip, max_skipped_iterations
        self.grad_sync: Callable[[torch.nn.Module], None] | None = None
        self.skipped_updates = 0
        self.nonfinite_transitions = 0
        self.skipped_streak = 0  # consecutive iterations whose every update was skipped
        self.actor_skip_streak = 0  # consecutive iterations whose actor update was skipped
        self.first_nonfinite = ""  # what went non-finite first (named by the divergence error)
        self.shown = SkippedUpdates()  # this iteration's skips, summarised by TrainingProgress
        self.begin_iteration()

    # ------------------------------------------------------------------ within an iteration
    def begin_iteration(self) -> None:
        """This iteration's skipped/tried updates per kind, skips counted on the device."""
        zero = torch.zeros((), device=self.device)
        self.skips = {kind: [zero, 0] for kind in UPDATE_KINDS}  # [skipped, tried]
        self._bad_actor_loss = zero.bool()
        self._nonfinite_action_grads = zero  # action-gradient rows zeroed by gate_action_grads
        self._action_rows = (zero.long(), zero.long())  # kept / zeroed in the current actor backward

    def count(self, kind: str, skipped: Any, tried: int) -> None:
        """Add updates done outside :meth:`step` (a world-model fit's steps) to this iteration's counts."""
        counter = self.skips[kind]
        counter[0], counter[1] = counter[0] + skipped, counter[1] + tried

    def gate_action_grads(self, action: torch.Tensor) -> torch.Tensor:
        """On the way back, zero (and count) each row of ``∂loss/∂action`` that is non-finite before it
        reaches the policy's parameters: a diverged env's window is left out of the loss, but the zero
        gradient it gets still meets the NaN Jacobians of its broken states (``0 · NaN = NaN``), and a
        simulator's backward can be NaN at a finite state. Every other row passes unchanged, so the other
        envs' gradient is exact."""
        if action.requires_grad:
            action.register_hook(self._zero_nonfinite_rows)
        return action

    def _zero_nonfinite_rows(self, grad: torch.Tensor) -> torch.Tensor:
        ok = torch.isfinite(grad).all(-1, keepdim=True)
        dropped = (~ok).sum()
        self._nonfinite_action_grads = self._nonfinite_action_grads + dropped
        kept, lost = self._action_rows
        self._action_rows = (kept + ok.sum(), lost + dropped)
        return torch.where(ok, grad, torch.zeros_like(grad))

    def step(self, loss: torch.Tensor, module: torch.nn.Module, opt: torch.optim.Optimizer,
             kind: str, empty: torch.Tensor | None = None,
             before_clip: Callable[[torch.nn.Module], None] | None = None) -> torch.Tensor:
        """Backward, clip, step — a step that the device skips when the loss or gradient is NaN/inf.

        The check never reaches the host: the finite flag goes to the fused Adam kernel as ``found_inf``
        (the input ``torch.amp.GradScaler`` uses), which then leaves parameters, moments and step count
        untouched. Skips are counted on the device and reported once per iteration. ``empty`` (a bool
        device scalar) also skips: a minibatch with no valid row must not move Adam by its momentum; so
        does an actor backward whose every action-gradient row came back non-finite (all zeroed by
        :meth:`gate_action_grads`). The decision is OR-ed over data-parallel ranks (:func:`any_rank`).
        ``before_clip(module)`` sees the (synchronised) gradient before it is clipped. Returns the gradient
        norm before clipping (a device scalar; NaN when skipped).
        """
        opt.zero_grad(set_to_none=True)
        if kind == "actor":  # action-gradient rows this backward keeps / zeroes (_zero_nonfinite_rows)
            zero = torch.zeros((), dtype=torch.long, device=self.device)
            self._action_rows = (zero, zero)
        loss.backward()
        if self.grad_sync is not None:
            self.grad_sync(module)
        if before_clip is not None:
            before_clip(module)
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), self.grad_clip)
        bad_loss = ~torch.isfinite(loss.detach())
        bad = bad_loss | ~torch.isfinite(norm)
        if empty is not None:
            bad = bad | empty
        if kind == "actor":  # every action's gradient, on every rank, was non-finite: a zero step trains nothing
            kept, lost = sum_over_ranks(torch.stack(self._action_rows))  # a rank with none still steps
            bad = bad | ((kept == 0) & (lost > 0))
        bad = any_rank(bad)  # data-parallel: a step that one rank skips, every rank skips
        opt.found_inf, opt.grad_scale = bad.to(torch.float32), None
        opt.step()
        opt.zero_grad(set_to_none=True)
        self.count(kind, bad, 1)
        if kind == "actor":
            self._bad_actor_loss = bad_loss
        return torch.where(bad, torch.full_like(norm, float("nan")), norm)

    def device_counts(self) -> dict[str, Any]:
        """This iteration's counts as (device) metric entries, read with the others by the trainer."""
        out: dict[str, Any] = {}
        for kind, (skipped, tried) in self.skips.items():
            out[f"_skipped/{kind}"], out[f"_tried/{kind}"] = skipped, float(tried)
        out["_bad_actor_loss"] = self._bad_actor_loss
        out["guard/nonfinite_action_grads"] = self._nonfinite_action_grads
        return out

    # ------------------------------------------------------------------ after an iteration
    def report(self, metrics: dict[str, Any], out: dict[str, float], iteration: int,
               diverged_magnitude: float) -> None:
        """Count skipped updates and masked transitions (``metrics``: the read values of
        :meth:`device_counts`), log them in one line, track the skip streaks; ``iteration`` counts from 1."""
        kinds = list(self.skips)
        skipped = {k: int(metrics[f"_skipped/{k}"]) for k in kinds}
        tried = {k: int(metrics[f"_tried/{k}"]) for k in kinds}
        masked = int(out.get("guard/nonfinite_transitions", 0))
        self.nonfinite_transitions += masked
        self.skipped_updates += sum(skipped.values())
        out["guard/skipped_updates"] = float(self.skipped_updates)
        if not self.first_nonfinite:
            if masked:
                self.first_nonfinite = (f"iteration {iteration}: {masked} simulator transition(s) with a "
                                        f"non-finite or diverged (|obs| > {diverged_magnitude:g}) "
                                        f"reward, state or observation")
            else:
                for kind in kinds:
                    if skipped[kind]:
                        what = "loss" if kind == "actor" and metrics["_bad_actor_loss"] else "loss or gradient"
                        self.first_nonfinite = f"iteration {iteration}: the {kind} {what}"
                        break
        self.shown.mask(masked)
        self.shown.cut(int(out.get("guard/nonfinite_action_grads", 0)))
        for kind in kinds:
            self.shown.record(kind, skipped[kind])
        attempted = sum(tried.values())
        all_skipped = attempted > 0 and sum(skipped.values()) == attempted
        self.skipped_streak = self.skipped_streak + 1 if all_skipped else 0
        if tried["actor"]:  # an iteration with no actor update (a warm-up) neither extends nor ends it
            self.actor_skip_streak = self.actor_skip_streak + 1 if skipped["actor"] == tried["actor"] else 0

    def stop_if_diverged(self) -> None:
        """Raise :class:`~mbmix_fw.TrainingDiverged` after ``run.max_skipped_iterations`` consecutive
        iterations whose every update, or whose actor update, was skipped."""
        limit = self.max_skipped_iterations
        if self.skipped_streak >= limit:
            what = f"every update of the last {self.skipped_streak} iterations was"
        elif self.actor_skip_streak >= limit:
            what = f"the actor update of the last {self.actor_skip_streak} iterations was"
        else:
            return
        raise TrainingDiverged(
            f"{what} skipped as non-finite (run.max_skipped_iterations = {limit}); first non-finite: "
            f"{self.first_nonfinite or 'unknown'}. The last checkpoint holds the last finite state."
        )

    # ------------------------------------------------------------------ checkpoint entries
    def state_entries(self) -> dict[str, Any]:
        """What the checkpoint keeps of the guard: the run's counters and streaks."""
        return {"skipped_updates": self.skipped_updates, "nonfinite_transitions": self.nonfinite_transitions,
                "skipped_streak": self.skipped_streak, "actor_skip_streak": self.actor_skip_streak,
                "first_nonfinite": self.first_nonfinite}

    def load_state_entries(self, state: dict[str, Any]) -> None:
        self.skipped_updates = state["skipped_updates"]
        self.nonfinite_transitions = state.get("nonfinite_transitions", 0)
        self.skipped_streak = state.get("skipped_streak", 0)
        self.actor_skip_streak = state.get("actor_skip_streak", 0)
        self.first_nonfinite = state.get("first_nonfinite", "")
