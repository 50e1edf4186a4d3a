"""The training loop: executes the scheduler's plan with an estimator, an env and (optionally) a world model.

Read it top to bottom: ``train`` → ``_iterate`` (one policy update) → helpers. Everything a run needs to
continue bit-for-bit after a crash (weights, optimisers, RNG states, env batch state, buffer, metric
history, and the optional ``state_dict`` of the env, estimator and scheduler) is in the checkpoint,
written atomically.

Non-finite numbers (a diverging simulator is bad input, not a crash):

- A transition whose reward, reached state or observation is NaN/inf, or whose observation exceeds the
  env's ``diverged_magnitude`` (default 1e6) in magnitude, ends its episode like a termination (value 0,
  DiffRL's rule) and is reset (:func:`mbmix_fw.maths.rollouts.diverged`). It never reaches the observation
  normaliser, the critic's regression or the replay buffer; it is counted in ``guard/nonfinite_transitions``.
- The actor learns past one bad env: the estimators leave a diverged env's window out of the actor
  objective (:func:`mbmix_fw.masked_actor_loss`; ``guard/masked_envs``), and the policy's actions zero the
  gradient rows that come back non-finite (``0 · NaN = NaN`` through the diverged env's Jacobians, or a
  simulator whose backward is NaN; ``guard/nonfinite_action_grads``), so no NaN reaches the parameters
  and the other envs' gradient is unchanged.
- An update (actor step, critic minibatch, world-model fit) whose loss or gradient is non-finite is
  skipped on the device and counted in ``guard/skipped_updates``; one warning line per iteration sums
  up what was skipped. A world-model fit that leaves the model non-finite is undone. In data-parallel
  training every skip decision is OR-ed over the ranks (:func:`mbmix_fw.any_rank`), so all replicas skip
  or step together.
- ``run.max_skipped_iterations`` consecutive iterations in which every update was skipped, or in which the
  actor update was skipped, stop the run with :class:`~mbmix_fw.TrainingDiverged` (exit 1) naming what
  went non-finite first; a checkpoint is never written with a non-finite tensor in it.

The GPU hot loop reads the device from the host once per model-free iteration: metrics stay device
tensors until :meth:`Trainer._read_metrics` reads them together, the NaN guard feeds its finite flag to
the fused Adam kernel (``found_inf``) instead of branching on it in Python, and resets are masked
(``DiffEnv.reset_done``) rather than tested (``tests/test_gpu_loop.py`` keeps the count at one).
"""
from __future__ import annotations

import copy
import logging
import math
import random
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

import attrs
import numpy as np
import torch

from .checkpoint import load_checkpoint_file, save_checkpoint_file
from ..contracts.env import DiffEnv, reports_contact
from ..errors import TrainingDiverged, UserError
from ..contracts.estimator import Estimate, EstimatorInput, GradientEstimator
from .metrics import MetricsLog
from ..maths.nets import Critic, ObsNormalizer, TanhGaussianPolicy
from .progress import SkippedUpdates, TrainingProgress
from ..maths.adjoint_tap import AdjointTap
from ..maths.jacobian_blend import JacobianBlend
from .run_folder import CHECKPOINT
from ..maths.returns import lambda_returns, safe_values
from ..maths.rollouts import Cursor, Rollout, healthy_envs
from .ranks import any_rank
from ..contracts.scheduler import Plan, Scheduler, plan_caller
from ..contracts.settings import CriticSettings, OptimSettings, PolicySettings, RunSettings
from ..contracts.world_model import WorldModel

log = logging.getLogger("mbmix_fw")

EVAL_TRANSITIONS = 256  # held-out transitions per iteration for world-model error metrics
MODEL_EXPLOSION = 4.0
"""A world model whose held-out state error exceeds this multiple of its best so far is rolled back to
the parameters (and optimiser state) it had at its best, and ``model/rollbacks`` counts it."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch's global RNGs (the run's own generator is seeded separately)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _nonfinite_entries(obj: Any) -> bool:
    """Whether any floating tensor inside ``obj`` (a state dict, possibly nested) is NaN/inf."""
    if isinstance(obj, torch.Tensor):
        return obj.is_floating_point() and not bool(torch.isfinite(obj).all())
    if isinstance(obj, dict):
        return any(_nonfinite_entries(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_nonfinite_entries(v) for v in obj)
    return False


def _adam(params, lr: float, betas) -> torch.optim.Adam:
    """Adam on the fused kernel, whose ``found_inf`` input skips a step on the device (see ``_guarded_step``)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


def _component_state(component: Any) -> Any:
    """The optional ``state_dict()`` of an env, estimator or scheduler (``None`` if it has none)."""
    getter = getattr(component, "state_dict", None)
    return getter() if callable(getter) else None


def _first_steps(rollout: Rollout, steps: int) -> Rollout:
    """The first ``steps`` steps of a rollout (TD(λ) targets then bootstrap at the cut)."""
    cut = {f.name: getattr(rollout, f.name)[:steps] for f in attrs.fields(Rollout) if f.name != "end"}
    return attrs.evolve(rollout, **cut)


def resolve_dtype(setting: str, env: DiffEnv, device: torch.device) -> torch.dtype:
    """The run's floating-point type: ``run.dtype``, or the env's (its ``reset`` states) for ``auto``."""
    produced = env.reset(1, torch.Generator(device=device).manual_seed(0)).dtype
    if setting == "auto":
        return produced
    wanted = getattr(torch, setting)
    if produced != wanted:
        raise UserError(f"run.dtype: {setting} requested but the env produces {produced} states; "
                        f"build the env in {setting} (its plugin must honour BuildContext.dtype)")
    return wanted


class Trainer:
    """Trains a tanh-Gaussian policy and a critic with any estimator, env, scheduler and world model.

    Research code builds it from objects (no recipe, no registry)::

        trainer = Trainer(env, estimator, scheduler, run=RunSettings(iterations=200), out_dir="runs/x")
        final = trainer.train()

    ``out_dir=None`` writes nothing (metrics are still returned and kept in ``history``).
    """

    def __init__(
        self,
        env: DiffEnv,
        estimator: GradientEstimator,
        scheduler: Scheduler,
        *,
        world_model: WorldModel | None = None,
        run: RunSettings = RunSettings(),
        policy: PolicySettings = PolicySettings(),
        critic: CriticSettings = CriticSettings(),
        optim: OptimSettings = OptimSettings(),
        out_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        hooks: Any = None,
        progress: bool = True,
    ):
        self.env, self.estimator, self.scheduler, self.world_model = env, estimator, scheduler, world_model
        self.run, self.policy_cfg, self.critic_cfg, self.optim_cfg = run, policy, critic, optim
        self.device = torch.device(device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.hooks, self.progress = hooks, progress

        seed_everything(run.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(run.seed)

        self.dtype = resolve_dtype(run.dtype, env, self.device)
        to = dict(device=self.device, dtype=self.dtype)
        self.policy = TanhGaussianPolicy(
            env.obs_dim, env.action_dim, policy.hidden, policy.activation, policy.layer_norm,
            policy.init_log_std, policy.squash,
        ).to(**to)
        self.critic = Critic(env.obs_dim, critic.hidden, critic.activation, critic.layer_norm).to(**to)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.obs_norm = ObsNormalizer(env.obs_dim).to(self.device) if policy.normalize_obs else None
        self.actor_opt = _adam(self.policy.parameters(), optim.actor_lr, optim.betas)
        self.critic_opt = _adam(self.critic.parameters(), optim.critic_lr, optim.betas)

        self.buffer = None
        if world_model is not None:
            from .buffer import ReplayBuffer

            world_model.to(**to)
            self.buffer = ReplayBuffer(
                getattr(world_model, "buffer_capacity", 100_000), env.state_dim, env.action_dim,
                world_model.probes, self.device, self.dtype,
            )

        self.tap = AdjointTap() if world_model is not None else None
        """Records the simulator's VJPs during the actor's backward through the real window
        (mbmix_fw/maths/adjoint_tap.py): the free Jacobian probes of a world model with
        ``probe_source = "adjoint"``, and the held-out Jacobian error of every model on large envs."""
        self.sim_steps = 0  # simulator forward steps (env rows), training only: rollouts and probes
        self.sim_vjps = 0  # simulator vector-Jacobian products (env rows × directions), backward and probes
        self.wall_time = 0.0  # seconds spent in training iterations (evaluation included)
        self.model_rollbacks = 0
        self._model_best: tuple[float, dict] | None = None  # (held-out state error, state dict) at its best

        self._plan = plan_caller(scheduler)  # passes the metrics only to a plan() that takes them
        self._needs_contact = bool(getattr(scheduler, "needs_contact", False))
        self._needs_agreement = bool(getattr(scheduler, "needs_gradient_agreement", False))
        if self._needs_agreement and env.num_envs < 2:
            raise UserError(f"scheduler {type(scheduler).__name__} compares the gradients of two halves of the "
                            f"env batch; env.num_envs = {env.num_envs} has no two halves (use at least 2)")
        if self._needs_contact and not reports_contact(env):
            raise UserError(f"scheduler {type(scheduler).__name__} needs the env's contact signal but env "
                            f"{type(env).__name__} does not report one (DiffEnv.contact_stiffness); use an env "
                            f"that implements it or another scheduler")
        self._last_metrics: dict[str, float] = {}  # what the next plan() sees: the previous iteration's row
        self.cursor = Cursor(
            env.reset(env.num_envs, self.generator),
            torch.zeros(env.num_envs, dtype=torch.long, device=self.device),
        )
        self.episode_return = torch.zeros(env.num_envs, device=self.device, dtype=self.dtype)
        self.iteration = 0
        self.env_steps = 0
        self.skipped_updates = 0
        self.skipped = SkippedUpdates()  # this iteration's skips, summarised by TrainingProgress
        self.nonfinite_transitions = 0
        self.skipped_streak = 0  # consecutive iterations whose every update was skipped
        self.actor_skip_streak = 0  # consecutive iterations whose actor update was skipped
        self.first_nonfinite = ""  # what went non-finite first (named by the divergence error)
        self.log = MetricsLog(self.out_dir)
        self._reset_guard_counters()
        self.grad_sync: Callable[[torch.nn.Module], None] | None = None
        """Called with the module after every ``backward``, before clipping: data-parallel training
        averages gradients across ranks here (mbmix_fw/distributed/ddp.py). ``backward`` runs even for a
        non-finite loss, so every rank takes part in each all-reduce and then skips the same update."""

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict[str, float]:
        """Run the remaining iterations (all of them, or those left after ``load_checkpoint``).

        Raises :class:`~mbmix_fw.TrainingDiverged` after ``run.max_skipped_iterations`` consecutive
        iterations whose every update was skipped as non-finite (the last good checkpoint stays on disk).
        """
        shown = TrainingProgress(self.planned_total(), self.iteration, enabled=self.progress, skipped=self.skipped)
        if self.iteration == 0:
            self.log.set_initial_eval(self.evaluate())
        try:
            while not self.finished():
                started, steps_before = time.perf_counter(), self.env_steps
                total = self.planned_total()
                shown.retotal(total)
                metrics = self._read_metrics(self._iterate(self._next_plan(total)))
                self.iteration += 1
                elapsed = time.perf_counter() - started
                metrics["time/iteration_s"] = elapsed
                metrics["time/steps_per_s"] = metrics.pop("_steps") / max(elapsed, 1e-9)
                last = self.finished()
                if last or self._evaluation_due(steps_before):
                    metrics["eval/return"] = self.evaluate()
                self.wall_time += time.perf_counter() - started
                metrics["time/wall_s"] = self.wall_time
                metrics["sim/steps"], metrics["sim/vjps"] = float(self.sim_steps), float(self.sim_vjps)
                self.log.append(self.iteration, metrics)
                self._last_metrics = metrics
                if self.hooks is not None:
                    self.hooks.on_iteration_end(run_dir=self.out_dir, iteration=self.iteration, metrics=metrics)
                shown.retotal(self.iteration if last else self.planned_total())
                shown.update(self.iteration, metrics, self.log.latest("train/return"),
                             self.log.latest("eval/return"), self.skipped_updates)
                self._stop_if_diverged()
                if last or self.iteration % self.run.checkpoint_every == 0:
                    self.save_checkpoint()
        finally:
            shown.close()
            self.log.close()
        final = self.log.final_metrics()
        if self.hooks is not None:
            self.hooks.on_run_end(run_dir=self.out_dir, metrics=final)
        return final

    def finished(self) -> bool:
        """True once the run's budget is spent: ``run.iterations`` updates, or ``run.env_steps`` env steps."""
        budget = self.run.env_steps
        return self.iteration >= self.run.iterations or (budget > 0 and self.env_steps >= budget)

    def planned_total(self) -> int:
        """The ``total`` schedulers see: ``run.iterations``, or under an env-step budget the projected count,
        iterations so far plus the remaining budget over the mean env steps per iteration so far (the
        estimator's configured window before the first), capped at ``run.iterations``. Integer arithmetic,
        so a fixed window that divides the budget projects exactly ``budget / (H·N)`` at every iteration."""
        budget, cap = self.run.env_steps, self.run.iterations
        if not budget:
            return cap
        remaining = max(budget - self.env_steps, 0)
        if self.iteration and self.env_steps:
            ahead = -(-remaining * self.iteration // self.env_steps)
        else:
            ahead = -(-remaining // (self.estimator.horizon(self.env) * self.env.num_envs))
        return min(cap, max(self.iteration + ahead, self.iteration + 1))

    def _evaluation_due(self, steps_before: int) -> bool:
        """After an iteration: every ``run.eval_every`` iterations, or when ``env/steps`` crossed a multiple
        of ``run.eval_every_env_steps`` during it."""
        every, steps_every = self.run.eval_every, self.run.eval_every_env_steps
        return bool((every and self.iteration % every == 0)
                    or (steps_every and self.env_steps // steps_every > steps_before // steps_every))

    def _cut_to_budget(self, plan: Plan) -> Plan:
        """Under an env-step budget, the last window cut to the remaining steps, rounded up to a multiple of
        the estimator's shortest window (``mix``: its interval). An estimator that honours one window
        length only (``horizon_bounds`` low = high) runs it whole."""
        budget = self.run.env_steps
        if not budget:
            return plan
        planned = plan.horizon if plan.horizon is not None else self.estimator.horizon(self.env)
        low, high = self.estimator.horizon_bounds(self.env)
        needed = -(-(budget - self.env_steps) // self.env.num_envs)
        cut = max(low, -(-needed // low) * low)
        if low == high or cut >= planned:
            return plan
        return attrs.evolve(plan, horizon=cut)

    def _next_plan(self, total: int) -> Plan:
        """The scheduler's plan for ``self.iteration`` (its one ``plan`` call of the iteration), given the
        previous iteration's metrics (empty at iteration 0; the last checkpointed row after a resume),
        with the last window of an env-step budget cut to it."""
        plan = self._cut_to_budget(self._plan(self.iteration, total, MappingProxyType(dict(self._last_metrics))))
        if self.iteration == 0 and self.world_model is not None and not (plan.model_branches or plan.model_fit_steps):
            log.warning("a world model is configured but %s neither fits nor uses it in the first iteration; "
                        "use a scheduler such as 'dyna'", type(self.scheduler).__name__)
        return plan

    def _check_plan(self, plan: Plan) -> None:
        """Refuse, before any update, a plan whose horizon or λ the estimator cannot honour."""
        who = f"scheduler {type(self.scheduler).__name__} (iteration {self.iteration})"
        estimator = type(self.estimator).__name__
        for name in ("horizon", "model_horizon"):
            value = getattr(plan, name)
            if value is None:
                continue
            low, high = self.estimator.horizon_bounds(self.env)
            if not low <= value <= high:
                raise UserError(f"{who} planned {name} {value}, outside [{low}, {high}], the window "
                                f"lengths estimator {estimator} honours")
        if plan.lam is not None and self.estimator.lam is None:
            raise UserError(f"{who} planned lam {plan.lam} but estimator {estimator} mixes no windows (no λ)")

    def _iterate(self, plan: Plan) -> dict[str, Any]:
        """One policy update: real window → model branches → policy step → critic → model fit.

        Metric values may be device tensors: :meth:`_read_metrics` reads them all in one transfer, so
        the model-free iteration never waits for the device before its end (``benchmarks/gpu_loop.py``).
        """
        self._check_plan(plan)
        self._set_learning_rates(plan)
        metrics: dict[str, Any] = {}
        beta = plan.env_weight
        self._reset_guard_counters()

        # ---- real rollout through the simulator (always: it advances the env and feeds the buffer)
        split = None
        if self._needs_agreement and beta > 0:  # per-half parameter copies (mbmix_fw/training/agreement.py)
            from .agreement import HalfSplitPolicy

            split = HalfSplitPolicy(self.policy, self._normalize, self.cursor.state.shape[0])
        with torch.set_grad_enabled(beta > 0):
            real = self.estimator.estimate(
                self._estimator_input(self._real_dynamics(plan), self.cursor, plan,
                                      None if split is None else lambda o, g: self._gate_action_grads(split(o, g))))
        real_finite = real.rollout.finite
        metrics["guard/nonfinite_transitions"] = (~real_finite).sum()
        metrics["guard/masked_envs"] = (~healthy_envs(real.rollout, self.env)).sum()
        self._track_episode_returns(real.rollout, real_finite, metrics)
        self.cursor = real.rollout.end
        metrics["_steps"] = real.rollout.steps * real.rollout.num_envs
        metrics["plan/horizon"] = float(real.rollout.steps)  # the window this iteration actually ran
        metrics["plan/env_weight"] = beta
        lam = plan.lam if plan.lam is not None else self.estimator.lam
        if lam is not None:
            metrics["plan/lam"] = float(lam)
        self.env_steps += metrics["_steps"]
        self.sim_steps += metrics["_steps"]
        metrics.update(real.metrics)
        if self._needs_contact:
            metrics.update(self._contact_metrics(real.rollout, real_finite))

        # ---- model branches from buffer states
        branch: Estimate | None = None
        if plan.model_branches and self.world_model is not None and len(self.buffer) > 0:
            if plan.branch_recent:
                starts = self.buffer.sample_recent_states(plan.model_branches, plan.branch_recent, self.generator)
            else:
                starts = self.buffer.sample_states(plan.model_branches, self.generator)
            branch_plan = attrs.evolve(plan, horizon=plan.model_horizon or plan.horizon)
            branch = self.estimator.estimate(
                self._estimator_input(self.world_model, Cursor(starts, None), branch_plan))
            metrics["loss/actor_model"] = branch.loss.detach()

        # ---- policy update on β·L_env + (1-β)·L_model
        loss = beta * real.loss if beta > 0 else None
        if branch is not None:
            term = (1.0 - beta) * branch.loss
            loss = term if loss is None else loss + term
        if loss is not None and loss.requires_grad:
            metrics["loss/actor"] = loss.detach()
            metrics["grad/actor_norm"] = self._guarded_step(loss, self.policy, self.actor_opt, "actor")
            if beta > 0 and plan.jacobian_blend < 1:  # the actor's backward ran through every real step
                self.sim_vjps += metrics["_steps"]
            if split is not None:
                metrics["grad/half_cosine"] = split.cosine()
        if self.world_model is not None:
            self.world_model.zero_grad(set_to_none=True)  # the branch loss reached the model's weights

        # ---- critic on TD(λ) targets of the real window (and the first steps of model branches, if asked)
        if self.estimator.uses_critic:
            rollouts = [real.rollout]
            if branch is not None and self.critic_cfg.model_branch_steps > 0:
                rollouts.append(_first_steps(branch.rollout, self.critic_cfg.model_branch_steps))
            metrics["loss/critic"] = self._update_critic(rollouts, plan)
            self._polyak_target()

        # ---- world model: held-out error on the new window, then fit on the buffer
        if self.world_model is not None:
            tapped = self.tap.probes() if self.tap is not None else None
            metrics.update(self._update_world_model(real.rollout, real_finite, plan, tapped))

        if self.obs_norm is not None:
            self.obs_norm.update(real.rollout.obs.detach(), real_finite)
        for name, (skipped, tried) in self._skips.items():
            metrics[f"_skipped/{name}"], metrics[f"_tried/{name}"] = skipped, float(tried)
        metrics["_bad_actor_loss"] = self._bad_actor_loss
        metrics["guard/nonfinite_action_grads"] = self._nonfinite_action_grads
        metrics["lr/actor"] = self.actor_opt.param_groups[0]["lr"]
        return metrics

    @torch.no_grad()
    def _contact_metrics(self, rollout: Rollout, finite: torch.Tensor) -> dict[str, torch.Tensor]:
        """The env's contact stiffness of the window's finite transitions: its mean over steps and envs
        (``contact/stiffness``) and over the envs at the first step (``contact/stiffness_first_step``,
        AHAC's dual update reads it); NaN when no transition is finite. Device scalars."""
        steps, n = rollout.steps, rollout.num_envs
        rows = lambda x: x.detach().reshape(steps * n, x.shape[-1])  # noqa: E731
        stiffness = self.env.contact_stiffness(rows(rollout.states), rows(rollout.actions),
                                               rows(rollout.next_states)).reshape(steps, n)
        valid = finite & torch.isfinite(stiffness)
        kept = torch.where(valid, stiffness, torch.zeros_like(stiffness))
        weight = valid.to(stiffness.dtype)
        return {"contact/stiffness": kept.sum() / weight.sum(),
                "contact/stiffness_first_step": kept[0].sum() / weight[0].sum()}

    def _reset_guard_counters(self) -> None:
        """This iteration's skipped/tried updates per kind, skips counted on the device."""
        zero = torch.zeros((), device=self.device)
        self._skips = {"actor": [zero, 0], "critic": [zero, 0], "world model": [zero, 0]}  # [skipped, tried]
        self._bad_actor_loss = zero.bool()
        self._nonfinite_action_grads = zero  # action-gradient rows zeroed by _policy_fn's hook
        self._action_rows = (zero.long(), zero.long())  # kept / zeroed in the current actor backward

    def _read_metrics(self, metrics: dict[str, Any]) -> dict[str, float]:
        """Every device-side metric to host floats in one transfer, then the per-iteration guard report."""
        keys = [k for k, v in metrics.items() if isinstance(v, torch.Tensor)]
        if keys:
            values = torch.stack([metrics[k].detach().to(torch.float64).reshape(()) for k in keys]).tolist()
            metrics = {**metrics, **dict(zip(keys, values))}
        out = {k: float(v) for k, v in metrics.items() if not k.startswith(("_skipped/", "_tried/", "_bad"))}
        out["_steps"] = metrics["_steps"]
        if "train/episodes" in out and out["train/episodes"] == 0:
            del out["train/return"], out["train/episodes"]
        self._guard_report(metrics, out)
        out["env/steps"] = float(self.env_steps)
        return out

    def _guard_report(self, metrics: dict[str, Any], out: dict[str, float]) -> None:
        """Count skipped updates and masked transitions, log them in one line, track the skip streak."""
        names = list(self._skips)
        skipped = {n: int(metrics[f"_skipped/{n}"]) for n in names}
        tried = {n: int(metrics[f"_tried/{n}"]) for n in names}
        masked = int(out.get("guard/nonfinite_transitions", 0))
        self.nonfinite_transitions += masked
        self.skipped_updates += sum(skipped.values())
        out["guard/skipped_updates"] = float(self.skipped_updates)
        iteration = self.iteration + 1
        if not self.first_nonfinite:
            if masked:
                self.first_nonfinite = (f"iteration {iteration}: {masked} simulator transition(s) with a "
                                        f"non-finite or diverged (|obs| > {self.env.diverged_magnitude:g}) "
                                        f"reward, state or observation")
            else:
                for name in names:
                    if skipped[name]:
                        what = "loss" if name == "actor" and metrics["_bad_actor_loss"] else "loss or gradient"
                        self.first_nonfinite = f"iteration {iteration}: the {name} {what}"
                        break
        self.skipped.mask(masked)
        self.skipped.cut(int(out.get("guard/nonfinite_action_grads", 0)))
        for name in names:
            self.skipped.record(name, skipped[name])
        attempted = sum(tried.values())
        all_skipped = attempted > 0 and sum(skipped.values()) == attempted
        self.skipped_streak = self.skipped_streak + 1 if all_skipped else 0
        if tried["actor"]:  # an iteration with no actor update (a warm-up) neither extends nor ends it
            self.actor_skip_streak = self.actor_skip_streak + 1 if skipped["actor"] == tried["actor"] else 0

    def _stop_if_diverged(self) -> None:
        limit = self.run.max_skipped_iterations
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

    # ------------------------------------------------------------------ pieces of an iteration
    def _normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return self.obs_norm.normalize(obs) if self.obs_norm is not None else obs

    def _target_value(self, obs: torch.Tensor) -> torch.Tensor:
        """The target critic's value of raw observations; 0 where they are non-finite or diverged."""
        return safe_values(lambda o: self.target_critic(self._normalize(o)), obs, self.env.diverged_magnitude)

    def _policy_fn(self, obs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The policy as estimators call it: raw observations in, actions out, and on the way back a gradient
        gate. A row of ``∂loss/∂action`` that is non-finite is zeroed (and counted) before it reaches the
        policy's parameters: a diverged env's window is left out of the loss, but the zero gradient it gets
        still meets the NaN Jacobians of its broken states (``0 · NaN = NaN``), and a simulator's backward can
        be NaN at a finite state. Every other row passes unchanged, so the other envs' gradient is exact."""
        return self._gate_action_grads(self.policy(self._normalize(obs), generator))

    def _gate_action_grads(self, action: torch.Tensor) -> torch.Tensor:
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

    def _real_dynamics(self, plan: Plan):
        """What the real window steps through: the env, tapped for free probes, its Jacobian blended with
        the world model's when the plan says so (values always the simulator's)."""
        if self.tap is not None:
            self.tap.clear()
        simulator = self.tap.wrap(self.env) if self.tap is not None else self.env
        if plan.jacobian_blend > 0:
            if self.world_model is None:
                raise UserError(f"{type(self.scheduler).__name__} planned jacobian_blend = "
                                f"{plan.jacobian_blend} but the run has no world model")
            return JacobianBlend(simulator, self.world_model, plan.jacobian_blend)
        return simulator

    def _estimator_input(self, dynamics, start: Cursor, plan: Plan = Plan(), policy_fn=None) -> EstimatorInput:
        return EstimatorInput(
            policy_fn=policy_fn or self._policy_fn,
            value_fn=self._target_value,
            env=self.env,
            dynamics=dynamics,
            start=start,
            generator=self.generator,
            horizon=plan.horizon,
            lam=plan.lam,
        )

    def _set_learning_rates(self, plan: Plan) -> None:
        for group in self.actor_opt.param_groups:
            group["lr"] = self.optim_cfg.actor_lr * plan.actor_lr_scale
        for group in self.critic_opt.param_groups:
            group["lr"] = self.optim_cfg.critic_lr * plan.critic_lr_scale

    def _guarded_step(self, loss: torch.Tensor, module: torch.nn.Module, opt: torch.optim.Optimizer,
                      name: str, empty: torch.Tensor | None = None) -> torch.Tensor:
        """Backward, clip, step — a step that the device skips when the loss or gradient is NaN/inf.

        The check never reaches the host: the finite flag goes to the fused Adam kernel as ``found_inf``
        (the input ``torch.amp.GradScaler`` uses), which then leaves parameters, moments and step count
        untouched. Skips are counted on the device and reported once per iteration. ``empty`` (a bool
        device scalar) also skips: a minibatch with no valid row must not move Adam by its momentum; so does
        an actor backward whose every action-gradient row came back non-finite (all zeroed by
        :meth:`_zero_nonfinite_rows`). The decision is OR-ed over data-parallel ranks (:func:`any_rank`).
        Returns the gradient norm (a device scalar; NaN when skipped).
        """
        opt.zero_grad(set_to_none=True)
        if name == "actor":  # action-gradient rows this backward keeps / zeroes (_zero_nonfinite_rows)
            zero = torch.zeros((), dtype=torch.long, device=self.device)
            self._action_rows = (zero, zero)
        loss.backward()
        if self.grad_sync is not None:
            self.grad_sync(module)
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), self.optim_cfg.grad_clip)
        bad_loss = ~torch.isfinite(loss.detach())
        bad = bad_loss | ~torch.isfinite(norm)
        if empty is not None:
            bad = bad | empty
        if name == "actor":  # every action's gradient was non-finite: a zero step would train nothing
            kept, lost = self._action_rows
            bad = bad | ((kept == 0) & (lost > 0))
        bad = any_rank(bad)  # data-parallel: a step that one rank skips, every rank skips
        opt.found_inf, opt.grad_scale = bad.to(torch.float32), None
        opt.step()
        opt.zero_grad(set_to_none=True)
        counter = self._skips[name]
        counter[0], counter[1] = counter[0] + bad, counter[1] + 1
        if name == "actor":
            self._bad_actor_loss = bad_loss
        return torch.where(bad, torch.full_like(norm, float("nan")), norm)

    def _critic_targets(self, rollouts: list[Rollout]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised observations, TD(λ) targets and a validity mask, flattened over every rollout.

        Targets bootstrap from the *target* critic; termination bootstraps 0, truncation keeps
        ``V(obs_before_reset)``. A non-finite transition (which the rollout ended as a termination) has
        its reward read as 0 and is left out of the regression (mask False).
        """
        gamma, lam = self.estimator.gamma, self.critic_cfg.lam
        obs_all, target_all, valid_all = [], [], []
        with torch.no_grad():
            for r in rollouts:
                finite = r.finite
                next_values = self._target_value(r.next_obs.detach())
                rewards = torch.where(finite, r.rewards.detach(), torch.zeros_like(r.rewards.detach()))
                targets = lambda_returns(rewards, next_values, r.terminated, r.done, gamma, lam)
                obs = torch.where(finite.unsqueeze(-1), r.obs.detach(), torch.zeros_like(r.obs.detach()))
                obs_all.append(self._normalize(obs).reshape(-1, r.obs.shape[-1]))
                target_all.append(targets.reshape(-1))
                valid_all.append(finite.reshape(-1))
        return torch.cat(obs_all), torch.cat(target_all), torch.cat(valid_all)

    def _update_critic(self, rollouts: list[Rollout], plan: Plan) -> torch.Tensor:
        """SHAC's critic: regress V on TD(λ) targets in minibatches (ours are reshuffled every pass;
        DiffRL's ``CriticDataset`` keeps the rollout order). Returns the mean loss (a device scalar)."""
        cfg = self.critic_cfg
        obs, targets, valid = self._critic_targets(rollouts)
        weight = valid.to(obs.dtype)
        iterations = plan.critic_iterations if plan.critic_iterations is not None else cfg.iterations
        batch = math.ceil(obs.shape[0] / cfg.minibatches)
        total, count = torch.zeros((), device=self.device, dtype=obs.dtype), 0
        for _ in range(iterations):
            order = torch.randperm(obs.shape[0], generator=self.generator, device=self.device)
            for chunk in order.split(batch):
                w = weight[chunk]
                error = torch.where(w > 0, self.critic(obs[chunk]) - targets[chunk], torch.zeros_like(w))
                loss = error.pow(2).sum() / w.sum().clamp_min(1.0)
                self._guarded_step(loss, self.critic, self.critic_opt, "critic", empty=w.sum() == 0)
                total, count = total + loss.detach(), count + 1
        return total / count if count else torch.full((), float("nan"), device=self.device)

    @torch.no_grad()
    def _polyak_target(self) -> None:
        """``target ← (1-τ)·target + τ·critic`` (τ = ``critic.tau``, the online net's weight)."""
        tau = self.critic_cfg.tau
        for target, online in zip(self.target_critic.parameters(), self.critic.parameters()):
            target.lerp_(online, tau)

    def _update_world_model(self, rollout: Rollout, finite: torch.Tensor, plan: Plan,
                            tapped=None) -> dict[str, Any]:
        """Held-out model error on the new window, then ``plan.model_fit_steps`` fit steps on the buffer.

        Probes: the adjoint tap's (``tapped``: free, in the policy's directions) when the model asks for
        them and the actor's backward reached the simulator; otherwise random ones, each a simulator VJP.
        Only finite transitions (and finite simulator probes) enter the buffer.

        Held-out error: the new window before the model trains on it — with full simulator Jacobians on
        small envs (``S + A <= FULL_JACOBIAN_MAX_DIM``: exact, and cheap there), else on the window's own
        probes (no simulator work beyond what the buffer gets anyway). A fit that leaves any parameter,
        statistic or optimiser state non-finite is undone and counted as skipped world-model updates; a
        held-out state error above ``MODEL_EXPLOSION`` × its best rolls the model back to its best.
        """
        from ..maths.probes import FULL_JACOBIAN_MAX_DIM, collect_eval_transitions, collect_transitions

        started = time.perf_counter()
        keep = finite.reshape(-1)
        flat = lambda x: x.detach().reshape(-1, x.shape[-1])[keep]  # noqa: E731 - finite rows of [T, N, D]
        states, actions, next_states = flat(rollout.states), flat(rollout.actions), flat(rollout.next_states)
        probes = self.world_model.probes
        if probes and tapped is not None and getattr(self.world_model, "probe_source", "random") == "adjoint":
            fresh = tapped
        else:
            fresh = collect_transitions(self.env, states, actions, probes, self.generator, next_state=next_states)
            if probes:
                self.sim_steps += states.shape[0]
                self.sim_vjps += states.shape[0] * probes
        if fresh.probe_u is not None:  # a simulator Jacobian can be non-finite at a finite state
            ok = torch.isfinite(fresh.probe_s).all(-1).all(-1) & torch.isfinite(fresh.probe_a).all(-1).all(-1)
            fresh = type(fresh)(*(v[ok] for v in (fresh.state, fresh.action, fresh.next_state,
                                                   fresh.probe_u, fresh.probe_s, fresh.probe_a)))
        metrics: dict[str, Any] = {}
        if len(self.buffer) > 0 and states.shape[0] > 0:
            # The new window is held out (the model never trained on it), for every model (the α = 0
            # ablation included), on a random subsample to bound the cost.
            small = states.shape[1] + actions.shape[1] <= FULL_JACOBIAN_MAX_DIM
            if small:
                pick = torch.randperm(states.shape[0], generator=self.generator, device=self.device)
                pick = pick[:EVAL_TRANSITIONS]
                held_out = collect_eval_transitions(
                    self.env, states[pick], actions[pick], self.generator, next_state=next_states[pick],
                )
                self.sim_steps += len(pick)
                self.sim_vjps += len(pick) * states.shape[1]
            else:  # the window's own probes: the tap's (any model) or the buffer's random ones
                rows = tapped if tapped is not None and len(tapped) > 0 else fresh
                pick = torch.randperm(len(rows), generator=self.generator, device=self.device)[:EVAL_TRANSITIONS]
                held_out = type(rows)(*(None if v is None else v[pick] for v in attrs.astuple(rows, recurse=False)))
            if len(held_out) > 0:
                metrics.update(self.world_model.evaluate(held_out))
                self._roll_back_if_exploded(metrics)
        if len(fresh) > 0:
            self.buffer.add(fresh)
        fit: dict[str, list[float]] = {}
        empty = torch.tensor(len(self.buffer) == 0, device=self.device)
        if plan.model_fit_steps and not bool(any_rank(empty)):  # data-parallel: fit on every rank or none
            before = copy.deepcopy(self.world_model.state_dict())
            for _ in range(plan.model_fit_steps):
                batch = self.buffer.sample(self.world_model.batch_size, self.generator)
                for key, value in self.world_model.fit(batch).items():
                    fit.setdefault(key, []).append(float(value))
            counter = self._skips["world model"]
            counter[1] += plan.model_fit_steps
            if _nonfinite_entries(self.world_model.state_dict()):
                self.world_model.load_state_dict(before)
                counter[0] = counter[0] + plan.model_fit_steps
            else:
                counter[0] = counter[0] + sum(fit.get("model/skipped", []))
        metrics.update({k: float(np.mean(v)) for k, v in fit.items() if k != "model/skipped"})
        metrics["buffer/size"] = float(len(self.buffer))
        metrics["model/rollbacks"] = float(self.model_rollbacks)
        metrics["time/model_s"] = time.perf_counter() - started
        return metrics

    def _roll_back_if_exploded(self, metrics: dict[str, Any]) -> None:
        """Keep the model at its best held-out state error; restore it there when the error explodes."""
        error = metrics.get("model/state_error")
        if error is None or not math.isfinite(error):
            return
        if self._model_best is None or error <= self._model_best[0]:
            self._model_best = (error, copy.deepcopy(self.world_model.state_dict()))
        elif error > MODEL_EXPLOSION * self._model_best[0]:
            best, saved = self._model_best
            self.world_model.load_state_dict(copy.deepcopy(saved))
            self.model_rollbacks += 1
            log.warning("world model: held-out state error %.3g exceeds %g x its best %.3g; rolled back to that "
                        "model (rollback %d)", error, MODEL_EXPLOSION, best, self.model_rollbacks)

    def _track_episode_returns(self, rollout: Rollout, finite: torch.Tensor, metrics: dict[str, Any]) -> None:
        """Undiscounted returns of the episodes that finished in this window (``train/return``).

        Device-side only: the sum and count of finished returns are read with the other metrics.
        Episodes that ended in a non-finite transition are left out.
        """
        rewards, done = rollout.rewards.detach(), rollout.done
        # rows where the estimator started fresh episodes instead of the cursor's (BPTT) start from 0
        same_start = (rollout.states[0].detach() == self.cursor.state).all(-1)
        episode = torch.where(same_start, self.episode_return, torch.zeros_like(self.episode_return))
        total = torch.zeros((), device=self.device, dtype=episode.dtype)
        count = torch.zeros((), device=self.device, dtype=torch.long)
        clean = torch.ones_like(done[0])  # the running episode has seen only finite transitions
        for t in range(rollout.steps):
            episode = episode + torch.where(finite[t], rewards[t], torch.zeros_like(rewards[t]))
            clean = clean & finite[t]
            ends = done[t] & clean
            total = total + torch.where(ends, episode, torch.zeros_like(episode)).sum()
            count = count + ends.sum()
            episode = torch.where(done[t], torch.zeros_like(episode), episode)
            clean = clean | done[t]
        self.episode_return = episode
        metrics["train/return"] = total / count.clamp_min(1)
        metrics["train/episodes"] = count

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean undiscounted return of ``run.eval_envs`` full episodes with the deterministic policy
        (:meth:`evaluation_returns`)."""
        return float(self.evaluation_returns().mean())

    @torch.no_grad()
    def evaluation_returns(self, episodes: int | None = None) -> torch.Tensor:
        """Undiscounted returns ``[episodes]`` (default ``run.eval_envs``) of full episodes, run in parallel
        with the deterministic policy.

        Uses its own generator seeded from the run seed, so every evaluation sees the same initial
        states and evaluation never perturbs training's random stream.
        """
        g = torch.Generator(device=self.device).manual_seed(self.run.seed + 1_000_003)
        state = self.env.reset(self.run.eval_envs if episodes is None else episodes, g)
        alive = torch.ones(state.shape[0], dtype=torch.bool, device=self.device)
        total = torch.zeros(state.shape[0], device=self.device)
        for _ in range(self.env.episode_length):
            action = self.policy(self._normalize(self.env.observe(state)), deterministic=True)
            next_state = self.env.step(state, action, g)
            total += torch.where(alive, self.env.reward(state, action, next_state), torch.zeros_like(total))
            alive &= ~self.env.terminated(next_state)
            state = next_state
            if not bool(alive.any()):
                break
        return total

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "format": 1,
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "skipped_updates": self.skipped_updates,
            "nonfinite_transitions": self.nonfinite_transitions,
            "skipped_streak": self.skipped_streak,
            "actor_skip_streak": self.actor_skip_streak,
            "first_nonfinite": self.first_nonfinite,
            "cost": {"sim_steps": self.sim_steps, "sim_vjps": self.sim_vjps, "wall_time": self.wall_time},
            "model_rollbacks": self.model_rollbacks,
            "model_best": None if self._model_best is None else list(self._model_best),
            "components": {name: _component_state(c) for name, c in self._stateful_components().items()},
            "policy": self.policy.state_dict(),
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "obs_norm": self.obs_norm.state_dict() if self.obs_norm is not None else None,
            "world_model": self.world_model.state_dict() if self.world_model is not None else None,
            "buffer": self.buffer.state_dict() if self.buffer is not None else None,
            "cursor_state": self.cursor.state,
            "cursor_t": self.cursor.t,
            "episode_return": self.episode_return,
            "device": self.device.type,
            "rng": {
                "generator": self.generator.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
                "python": random.getstate(),
            },
            "log": self.log.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["device"] != self.device.type:
            # generator states are device-specific: a run continues bit-for-bit only where it started
            raise UserError(f"checkpoint was written by a run on {state['device']}; resume it with "
                            f"--device {state['device']}")
        self.iteration, self.env_steps = state["iteration"], state["env_steps"]
        self.skipped_updates = state["skipped_updates"]
        self.nonfinite_transitions = state.get("nonfinite_transitions", 0)
        self.skipped_streak = state.get("skipped_streak", 0)
        self.actor_skip_streak = state.get("actor_skip_streak", 0)
        self.first_nonfinite = state.get("first_nonfinite", "")
        cost = state.get("cost", {})
        self.sim_steps, self.sim_vjps = cost.get("sim_steps", 0), cost.get("sim_vjps", 0)
        self.wall_time = cost.get("wall_time", 0.0)
        self.model_rollbacks = state.get("model_rollbacks", 0)
        best = state.get("model_best")
        self._model_best = None if best is None else (best[0], best[1])
        for name, component in self._stateful_components().items():
            saved = state.get("components", {}).get(name)
            loader = getattr(component, "load_state_dict", None)
            if saved is not None and callable(loader):
                loader(saved)
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        if self.obs_norm is not None:
            self.obs_norm.load_state_dict(state["obs_norm"])
        if self.world_model is not None:
            self.world_model.load_state_dict(state["world_model"])
            self.buffer.load_state_dict(state["buffer"])
        self.cursor = Cursor(state["cursor_state"].to(self.device), state["cursor_t"].to(self.device))
        self.episode_return = state["episode_return"].to(self.device)
        rng = state["rng"]
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
        kind, keys, *rest = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
        self.log.load_state_dict(state["log"])
        self._last_metrics = self.log.last_row(self.iteration)

    def save_checkpoint(self, path: str | Path | None = None) -> Path | None:
        """Write the full training state atomically (``checkpoints/last.pt`` in the run folder)."""
        if path is None:
            if self.out_dir is None:
                return None
            path = self.out_dir / CHECKPOINT
        state = self.state_dict()
        poisoned = [name for name in ("policy", "critic", "target_critic", "actor_opt", "critic_opt", "obs_norm",
                                      "world_model", "buffer", "cursor_state", "episode_return", "components")
                    if _nonfinite_entries(state[name])]
        if poisoned:  # the guards should make this unreachable; never overwrite a good checkpoint with it
            raise TrainingDiverged(f"refusing to checkpoint non-finite {', '.join(poisoned)} at iteration "
                                   f"{self.iteration}; first non-finite: {self.first_nonfinite or 'unknown'}")
        return save_checkpoint_file(state, Path(path))

    def _stateful_components(self) -> dict[str, Any]:
        """The components whose optional ``state_dict()`` / ``load_state_dict()`` the checkpoint carries.

        Protocol (optional, duck-typed): a stateful env (its own RNG), estimator or scheduler (an
        adaptive schedule) defines ``state_dict() -> dict`` of tensors and plain Python values
        (``torch.load(weights_only=True)`` must read it) and ``load_state_dict(state)``; the trainer
        saves it in every checkpoint and restores it on resume. World models (``nn.Module`` objects) are
        saved whole (``WorldModel`` docs).
        """
        return {"env": self.env, "estimator": self.estimator, "scheduler": self.scheduler}

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`; ``train()`` then continues from it.

        Loaded onto the CPU: RNG states must stay CPU byte tensors, and every module, optimiser and
        buffer moves its own tensors onto the trainer's device.
        """
        self.load_state_dict(load_checkpoint_file(Path(path), map_location="cpu"))

