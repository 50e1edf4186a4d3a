"""The world model's side of an iteration: what the real window's simulator is wrapped in (the adjoint
tap, the Jacobian blend), where model branches start, and the model's evaluation, fit and rollback.

Why its own role: a world model changes four things in an iteration (the real window's dynamics, the
branches, the buffer, the model itself) and owns four pieces of state (the model, the replay buffer, the
rollback's best model, the simulator work its probes cost); a model-free run has none of them.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any

import attrs
import numpy as np
import torch

from ..contracts.env import DiffEnv
from ..contracts.rollout_types import Rollout
from ..contracts.scheduler import Plan
from ..contracts.world_model import WorldModel
from ..maths.adjoint_tap import AdjointTap
from ..maths.finite import cloned
from ..maths.jacobian_blend import JacobianBlend
from .buffer import ReplayBuffer
from .cost import SimulatorCost
from .run_state import nonfinite_entries
from .guard import DivergenceGuard
from ..maths.ranks import any_rank, rank_count, sum_over_ranks

log = logging.getLogger("mbmix_fw")

EVAL_TRANSITIONS = 256  # held-out transitions per iteration for world-model error metrics
FIT_SEED_OFFSET, BRANCH_SEED_OFFSET = 2_000_003, 3_000_017
"""The world model's own random streams are seeded ``run.seed`` plus these (see :class:`WorldModelLearner`)."""
MODEL_EXPLOSION = 4.0
"""A world model whose held-out state error exceeds this multiple of its best so far is rolled back to
the parameters (and optimiser state) it had at its best, and ``model/rollbacks`` counts it."""


class WorldModelLearner:
    """Feeds ``world_model`` from the real windows and keeps it at its best.

    ``tap`` records the simulator's VJPs during the actor's backward through the real window
    (mbmix_fw/maths/adjoint_tap.py): the free Jacobian probes of a world model with
    ``probe_source = "adjoint"``, and the held-out Jacobian error of every model on large envs.

    Two random streams of its own, seeded from ``seed``: ``fit_generator`` (random probes, held-out picks,
    fit minibatches) and ``branch_generator`` (branch start states and the branches' policy noise). Why:
    the real windows then draw from the run's generator exactly as a run that fits the model differently
    (an MSE or longer fit) or never uses it (β = 1) does, so such ablations stay paired with the method
    — they see the same real random numbers until their policies differ.
    """

    def __init__(self, world_model: WorldModel, env: DiffEnv, guard: DivergenceGuard, cost: SimulatorCost,
                 seed: int, device: torch.device, dtype: torch.dtype, *, exact_small_jacobians: bool = True):
        self.world_model, self.env, self.guard, self.cost = world_model, env, guard, cost
        self.exact_small_jacobians = exact_small_jacobians
        """Held-out Jacobian errors from the simulator's full Jacobians on small envs (``run.model_error_probes
        = "auto"``); off, always from the window's own probes, at no simulator cost."""
        self.device = device
        self.fit_generator = torch.Generator(device=device).manual_seed(seed + FIT_SEED_OFFSET)
        self.branch_generator = torch.Generator(device=device).manual_seed(seed + BRANCH_SEED_OFFSET)
        world_model.to(device=device, dtype=dtype)
        self.buffer = ReplayBuffer(
            world_model.buffer_capacity, env.state_dim, env.action_dim,
            world_model.probes, device, dtype,
        )
        self.tap = AdjointTap()
        self.rollbacks = 0
        self.best: tuple[float, dict] | None = None  # (held-out state error, state dict) at its best

    # ------------------------------------------------------------------ before the actor update
    def real_dynamics(self, plan: Plan):
        """What the real window steps through: the env, tapped for free probes, its Jacobian blended with
        the world model's when the plan says so (values always the simulator's)."""
        self.tap.clear()
        simulator = self.tap.wrap(self.env)
        if plan.jacobian_blend > 0:
            return JacobianBlend(simulator, self.world_model, plan.jacobian_blend)
        return simulator

    def branch_starts(self, plan: Plan) -> torch.Tensor | None:
        """Start states of ``plan.model_branches`` model branches drawn from the buffer (the most recent
        ``plan.branch_recent`` transitions when set), or ``None`` when no branch runs. Data-parallel: branches
        run on every rank or none (a rank whose buffer is still empty holds the others back), since the
        branch loss takes part in collectives (``masked_actor_loss``'s union count)."""
        if not plan.model_branches:
            return None
        if bool(any_rank(torch.tensor(len(self.buffer) == 0, device=self.device))):
            return None
        if plan.branch_recent:
            return self.buffer.sample_recent_states(plan.model_branches, plan.branch_recent,
                                                    self.branch_generator)
        return self.buffer.sample_states(plan.model_branches, self.branch_generator)

    # ------------------------------------------------------------------ after the actor update
    def update(self, rollout: Rollout, finite: torch.Tensor, plan: Plan) -> dict[str, Any]:
        """Held-out model error on the new window, then ``plan.model_fit_steps`` fit steps on the buffer.

        Probes: the adjoint tap's (free, in the policy's directions) when the model asks for them and the
        actor's backward reached the simulator; otherwise random ones, each a simulator VJP. Only finite
        transitions (and finite simulator probes) enter the buffer.

        Held-out error: the new window before the model trains on it — with full simulator Jacobians on
        small envs (``S + A <= FULL_JACOBIAN_MAX_DIM``: exact, and cheap there) unless the run asks for the
        window's probes (``run.model_error_probes = "window"``), else on the window's own probes (no simulator
        work beyond what the buffer gets anyway). A fit that leaves any parameter,
        statistic or optimiser state non-finite is undone and counted as skipped world-model updates; a
        held-out state error above ``MODEL_EXPLOSION`` × its best rolls the model back to its best.
        """
        from ..maths.probes import FULL_JACOBIAN_MAX_DIM, collect_eval_transitions, collect_transitions

        started = time.perf_counter()
        tapped = self.tap.probes()
        keep = finite.reshape(-1)
        flat = lambda x: x.detach().reshape(-1, x.shape[-1])[keep]  # noqa: E731 - finite rows of [T, N, D]
        states, actions, next_states = flat(rollout.states), flat(rollout.actions), flat(rollout.next_states)
        probes = self.world_model.probes
        if probes and tapped is not None and getattr(self.world_model, "probe_source", "random") == "adjoint":
            fresh = tapped
        else:
            fresh = collect_transitions(self.env, states, actions, probes, self.fit_generator, next_state=next_states)
            if probes:
                self.cost.steps += states.shape[0]
                self.cost.vjps += states.shape[0] * probes
        if tapped is not None and fresh is tapped:  # the tap saw every row; the window's diverged ones go
            fresh = self._within_bound(fresh)
        if fresh.probe_u is not None:  # a simulator Jacobian can be non-finite at a finite state
            ok = torch.isfinite(fresh.probe_s).all(-1).all(-1) & torch.isfinite(fresh.probe_a).all(-1).all(-1)
            fresh = type(fresh)(*(v[ok] for v in (fresh.state, fresh.action, fresh.next_state,
                                                   fresh.probe_u, fresh.probe_s, fresh.probe_a)))
        metrics: dict[str, Any] = {}
        if len(self.buffer) > 0 and states.shape[0] > 0:
            # The new window is held out (the model never trained on it), for every model (the α = 0
            # ablation included), on a random subsample to bound the cost.
            small = states.shape[1] + actions.shape[1] <= FULL_JACOBIAN_MAX_DIM
            if small and self.exact_small_jacobians:
                pick = torch.randperm(states.shape[0], generator=self.fit_generator, device=self.device)
                pick = pick[:EVAL_TRANSITIONS]
                held_out = collect_eval_transitions(
                    self.env, states[pick], actions[pick], self.fit_generator, next_state=next_states[pick],
                )
                self.cost.steps += len(pick)
                self.cost.vjps += len(pick) * states.shape[1]
            else:  # the window's own probes: the tap's (any model) or the buffer's random ones
                rows = tapped if tapped is not None and len(tapped) > 0 else fresh
                pick = torch.randperm(len(rows), generator=self.fit_generator, device=self.device)[:EVAL_TRANSITIONS]
                held_out = type(rows)(*(None if v is None else v[pick] for v in attrs.astuple(rows, recurse=False)))
            if len(held_out) > 0:
                metrics.update(self.world_model.evaluate(held_out))
        self._roll_back_if_exploded(self._agreed_state_error(metrics.get("model/state_error")))
        if len(fresh) > 0:
            self.buffer.add(fresh)
        metrics.update(self._fit(plan, len(fresh)))
        metrics["buffer/size"] = float(len(self.buffer))
        metrics["model/rollbacks"] = float(self.rollbacks)
        metrics["time/model_s"] = time.perf_counter() - started
        return metrics

    def _within_bound(self, rows):
        """``rows`` without the transitions whose observations exceed the env's ``diverged_magnitude``:
        a diverged-but-finite transition is as broken as a NaN one (:attr:`Rollout.finite`)."""
        if len(rows) == 0:
            return rows
        bound = self.env.diverged_magnitude
        with torch.no_grad():
            ok = ((self.env.observe(rows.state).abs() <= bound).all(-1)
                  & (self.env.observe(rows.next_state).abs() <= bound).all(-1))
        return type(rows)(*(None if v is None else v[ok] for v in attrs.astuple(rows, recurse=False)))

    def fit_steps(self, plan: Plan, added: int) -> int:
        """This iteration's fit steps: ``plan.model_fit_steps`` plus the data-proportional budget
        ``ceil(plan.model_fit_per_transition · added / batch_size)`` for ``added`` new transitions."""
        extra = plan.model_fit_per_transition * added / self.world_model.batch_size
        return plan.model_fit_steps + math.ceil(extra - 1e-9) if extra > 0 else plan.model_fit_steps

    def _fit(self, plan: Plan, added: int) -> dict[str, float]:
        """:meth:`fit_steps` fit steps on buffer batches; undone when the model ends non-finite."""
        fit: dict[str, list[float]] = {}
        steps = self.fit_steps(plan, added)
        empty = torch.tensor(len(self.buffer) == 0, device=self.device)
        if steps and not bool(any_rank(empty)):  # data-parallel: fit on every rank or none
            before = cloned(self.world_model.state_dict())
            for _ in range(steps):
                batch = self.buffer.sample(self.world_model.batch_size, self.fit_generator)
                for key, value in self.world_model.fit(batch).items():
                    fit.setdefault(key, []).append(float(value))
            if nonfinite_entries(self.world_model.state_dict()):
                self.world_model.load_state_dict(before)
                self.guard.count("world model", steps, steps)
            else:
                self.guard.count("world model", sum(fit.get("model/skipped", [])), steps)
        out = {k: float(np.mean(v)) for k, v in fit.items() if k != "model/skipped"}
        if steps:
            out["model/fit_steps"] = float(steps)
        return out

    def _agreed_state_error(self, error: float | None) -> float | None:
        """The held-out state error the rollback decides on: this rank's, or in data-parallel training the
        mean over the ranks that measured one (a collective every rank calls each iteration), so every
        replica keeps and restores the same best model and none drifts."""
        if rank_count() == 1:
            return error
        local = torch.tensor([error, 1.0] if error is not None and math.isfinite(error) else [0.0, 0.0],
                             dtype=torch.float64, device=self.device)
        total, measured = sum_over_ranks(local).tolist()
        return total / measured if measured else None

    def _roll_back_if_exploded(self, error: float | None) -> None:
        """Keep the model at its best held-out state error; restore it there when the error explodes."""
        if error is None or not math.isfinite(error):
            return
        if self.best is None or error <= self.best[0]:
            self.best = (error, cloned(self.world_model.state_dict()))
        elif error > MODEL_EXPLOSION * self.best[0]:
            best, saved = self.best
            self.world_model.load_state_dict(cloned(saved))
            self.rollbacks += 1
            log.warning("world model: held-out state error %.3g exceeds %g x its best %.3g; rolled back to that "
                        "model (rollback %d)", error, MODEL_EXPLOSION, best, self.rollbacks)

    # ------------------------------------------------------------------ checkpoint entries
    def state_entries(self) -> dict[str, Any]:
        """What the checkpoint keeps of the world model: the model (whole: it is an ``nn.Module``), the
        buffer, the rollback count and the best model so far."""
        return {"model_rollbacks": self.rollbacks,
                "model_best": None if self.best is None else list(self.best),
                "world_model": self.world_model.state_dict(),
                "buffer": self.buffer.state_dict(),
                "model_rng": {"fit": self.fit_generator.get_state(), "branch": self.branch_generator.get_state()}}

    def load_state_entries(self, state: dict[str, Any]) -> None:
        rng = state.get("model_rng")
        if rng is not None:
            self.fit_generator.set_state(rng["fit"])
            self.branch_generator.set_state(rng["branch"])
        self.rollbacks = state.get("model_rollbacks", 0)
        best = state.get("model_best")
        self.best = None if best is None else (best[0], best[1])
        self.world_model.load_state_dict(state["world_model"])
        self.buffer.load_state_dict(state["buffer"])
