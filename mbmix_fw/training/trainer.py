"""The training loop: executes the scheduler's plan with an estimator, an env and (optionally) a world model.

Read it top to bottom: ``train`` → ``_iterate`` (one policy update as a short sequence of calls: plan →
real window → model branches → actor → critic → world model → metrics) → the env-step budget. Each role
is an object with one job and its own state, in its own module, given its collaborators:

- :class:`~mbmix_fw.training.actor_update.ActorUpdate` — the policy as estimators call it, the actor step;
- :class:`~mbmix_fw.training.critic_learner.CriticLearner` — TD(λ) targets, the critic and its target;
- :class:`~mbmix_fw.training.world_model_learner.WorldModelLearner` — the adjoint tap, branches, the
  model's evaluation, fit and rollback, the replay buffer;
- :class:`~mbmix_fw.training.guard.DivergenceGuard` — guarded steps, skip counts, the stop rule;
- :class:`~mbmix_fw.training.evaluation.Evaluator` — deterministic evaluation episodes;
- :class:`~mbmix_fw.training.window_metrics.EpisodeReturns`, :class:`~mbmix_fw.training.cost.SimulatorCost`
  and :mod:`~mbmix_fw.training.run_state` (random streams, components' optional state).

Everything a run needs to continue bit-for-bit after a crash (weights, optimisers, RNG states, env batch
state, buffer, metric history, and the optional ``state_dict`` of the env, estimator and scheduler) is in
the checkpoint, written atomically; each role says what it saves (``state_entries``).

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
(``DiffEnv.reset_done``) rather than tested (``tests/core/training/test_sync_count.py`` keeps the count at one).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

import attrs
import torch

from ..contracts.env import DiffEnv, reports_contact
from ..contracts.estimator import Estimate, EstimatorInput, GradientEstimator
from ..contracts.metrics import ACTOR_UPDATED
from ..contracts.rollout_types import Cursor
from ..contracts.component import component_label
from ..contracts.scheduler import Plan, Scheduler
from ..contracts.settings import CriticSettings, OptimSettings, PolicySettings, RunSettings
from ..contracts.world_model import WorldModel
from ..errors import TrainingDiverged, UserError
from ..maths.rollouts import healthy_envs
from . import budget
from .actor_update import ActorUpdate
from .checkpoint import load_checkpoint_file, save_checkpoint_file
from .cost import SimulatorCost
from .critic_learner import CriticLearner
from .evaluation import Evaluator
from .guard import DivergenceGuard
from .metrics import MetricsLog
from .progress import TrainingProgress
from .run_folder import CHECKPOINT
from .run_state import check_device, component_state, load_component_state, nonfinite_entries, restore_rng, \
    rng_state
from .setup import adam, build_networks, resolve_dtype, seed_everything
from .window_metrics import EpisodeReturns, contact_metrics
from .world_model_learner import WorldModelLearner

log = logging.getLogger("mbmix_fw")


class Trainer:
    """Trains a tanh-Gaussian policy and a critic with any estimator, env, scheduler and world model.

    Research code builds it from objects (no recipe, no registry)::

        trainer = Trainer(env, estimator, scheduler, run=RunSettings(iterations=200), out_dir="runs/x")
        final = trainer.train()

    ``out_dir=None`` writes nothing (metrics are still returned and kept in ``history``).

    Why about 350 lines, over the house's 300: it keeps the two jobs that need every role — the iteration
    (the order of calls, the bookkeeping between them) and the checkpoint assembled from the roles'
    entries — and a third of it is their contracts in docstrings; the work itself lives in the roles.
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

        if run.threads is not None:
            torch.set_num_threads(run.threads)
        seed_everything(run.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(run.seed)
        self.dtype = resolve_dtype(run.dtype, env, self.device)
        self.networks = build_networks(env, policy, critic, self.device, self.dtype)
        self.policy, self.critic = self.networks.policy, self.networks.critic
        self.target_critic, self.obs_norm = self.networks.target_critic, self.networks.obs_norm
        self.actor_opt = adam(self.policy.parameters(), optim.actor_lr, optim.betas)
        self.critic_opt = adam(self.critic.parameters(), optim.critic_lr, optim.betas)

        self.guard = DivergenceGuard(self.device, optim.grad_clip, run.max_skipped_iterations)
        self.cost = SimulatorCost()
        self.actor_update = ActorUpdate(self.networks, self.actor_opt, self.guard, optim.grad_clip,
                                        measure_model_share=world_model is not None)
        self.critic_update = CriticLearner(self.networks, self.critic_opt, critic, estimator.gamma,
                                           env.diverged_magnitude, self.guard, self.generator)
        self.model_update = None if world_model is None else WorldModelLearner(
            world_model, env, self.guard, self.cost, run.seed, self.device, self.dtype,
            exact_small_jacobians=run.model_error_probes == "auto")
        self.buffer = None if self.model_update is None else self.model_update.buffer
        self.evaluator = Evaluator(env, self.policy, self.networks.normalize, run.seed, run.eval_envs, self.device)

        self._plan = scheduler.plan  # data-parallel ranks replace it with rank 0's plan (distributed/ddp.py)
        self._needs_contact = bool(getattr(scheduler, "needs_contact", False))
        self._needs_agreement = bool(getattr(scheduler, "needs_gradient_agreement", False))
        if self._needs_agreement and env.num_envs < 2:
            raise UserError(f"{component_label('scheduler', scheduler)} compares the gradients of two halves of the "
                            f"env batch; env.num_envs = {env.num_envs} has no two halves (use at least 2)")
        if self._needs_contact and not reports_contact(env):
            raise UserError(f"{component_label('scheduler', scheduler)} needs the env's contact signal but env "
                            f"{type(env).__name__} does not report one (DiffEnv.contact_stiffness); use an env "
                            f"that implements it or another scheduler")
        self._last_metrics: dict[str, float] = {}  # what the next plan() sees: the previous iteration's row
        self.cursor = Cursor(
            env.reset(env.num_envs, self.generator),
            torch.zeros(env.num_envs, dtype=torch.long, device=self.device),
        )
        self.episodes = EpisodeReturns(env.num_envs, self.device, self.dtype)
        self.iteration = 0
        self.env_steps = 0  # this process's env rows stepped in training windows
        self.ranks = 1
        """Processes training this run together (data-parallel: set by ``make_data_parallel``). Logged
        ``env/steps`` and the ``run.eval_every_env_steps`` cadence count every rank's steps, so a curve and
        its evaluations fall where a one-process run's would; the budget is split per rank."""
        self.log = MetricsLog(self.out_dir)

    @property
    def grad_sync(self) -> Callable[[torch.nn.Module], None] | None:
        """Called with the module after every ``backward``, before clipping: data-parallel training
        averages gradients across ranks here (mbmix_fw/distributed/ddp.py; :class:`DivergenceGuard`)."""
        return self.guard.grad_sync

    @grad_sync.setter
    def grad_sync(self, sync: Callable[[torch.nn.Module], None] | None) -> None:
        self.guard.grad_sync = sync

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict[str, float]:
        """Run the remaining iterations (all of them, or those left after ``load_checkpoint``).

        Raises :class:`~mbmix_fw.TrainingDiverged` after ``run.max_skipped_iterations`` consecutive
        iterations whose every update was skipped as non-finite (the last good checkpoint stays on disk).
        """
        shown = TrainingProgress(self.planned_total(), self.iteration, enabled=self.progress,
                                 skipped=self.guard.shown)
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
                if last or budget.evaluation_due(self.run, self.iteration, self.env_steps * self.ranks,
                                                 steps_before * self.ranks):
                    metrics.update(self.evaluator.metrics())
                self.cost.wall_time += time.perf_counter() - started
                metrics["time/wall_s"] = self.cost.wall_time
                metrics["sim/steps"], metrics["sim/vjps"] = float(self.cost.steps), float(self.cost.vjps)
                self.log.append(self.iteration, metrics)
                self._last_metrics = metrics
                if self.hooks is not None:
                    self.hooks.on_iteration_end(run_dir=self.out_dir, iteration=self.iteration, metrics=metrics)
                shown.retotal(self.iteration if last else self.planned_total())
                shown.update(self.iteration, metrics, self.log.latest("train/return"),
                             self.log.latest("eval/return"), self.guard.skipped_updates)
                self.guard.stop_if_diverged()
                if last or self.iteration % self.run.checkpoint_every == 0:
                    self.save_checkpoint()
        finally:
            shown.close()
            self.log.close()
        final = self.log.final_metrics()
        if self.hooks is not None:
            self.hooks.on_run_end(run_dir=self.out_dir, metrics=final)
        return final

    def _iterate(self, plan: Plan) -> dict[str, Any]:
        """One policy update: real window → model branches → policy step → critic → model fit.

        Metric values may be device tensors: :meth:`_read_metrics` reads them all in one transfer, so
        the model-free iteration never waits for the device before its end (``benchmarks/gpu_loop.py``).
        """
        self._set_learning_rates(plan)
        self.guard.begin_iteration()
        metrics: dict[str, Any] = {}
        real, finite, split = self._real_window(plan, metrics)
        branch = self._model_branches(plan, metrics)

        # ---- policy update on β·L_env + (1-β)·L_model
        stepped = self.actor_update.step(real, branch, plan.env_weight)
        metrics.update(stepped)
        metrics[ACTOR_UPDATED] = 1.0 if stepped else 0.0
        if stepped and plan.env_weight > 0 and plan.jacobian_blend < 1:  # the backward ran through every real step
            self.cost.vjps += metrics["_steps"]
        if stepped and split is not None:
            metrics["grad/half_cosine"] = split.cosine()
        if self.world_model is not None:
            self.world_model.zero_grad(set_to_none=True)  # the branch loss reached the model's weights

        # ---- critic on TD(λ) targets of the real window (and the first steps of model branches, if asked)
        if self.estimator.uses_critic:
            rollouts = [real.rollout]
            if branch is not None and self.critic_cfg.model_branch_steps > 0:
                rollouts.append(branch.rollout.first(self.critic_cfg.model_branch_steps))
            metrics["loss/critic"] = self.critic_update.update(rollouts, plan)

        # ---- world model: held-out error on the new window, then fit on the buffer
        if self.model_update is not None:
            metrics.update(self.model_update.update(real.rollout, finite, plan))

        if self.obs_norm is not None:
            self.obs_norm.update(real.rollout.obs.detach(), finite)
        metrics.update(self.guard.device_counts())
        metrics["lr/actor"] = self.actor_opt.param_groups[0]["lr"]
        return metrics

    def _real_window(self, plan: Plan, metrics: dict[str, Any]) -> tuple[Estimate, torch.Tensor, Any]:
        """The real rollout through the simulator (always: it advances the env and feeds the buffer), its
        bookkeeping (cursor, env steps, returns, contact), its finite transitions ``[T, N]``, and the
        split-half policy when one is measured."""
        beta = plan.env_weight
        split = None
        if self._needs_agreement and beta > 0:  # per-half parameter copies (mbmix_fw/training/agreement.py)
            from .agreement import HalfSplitPolicy

            split = HalfSplitPolicy(self.policy, self.networks.normalize, self.cursor.state.shape[0])
        policy_fn = None if split is None else (lambda o, g: self.guard.gate_action_grads(split(o, g)))
        with torch.set_grad_enabled(beta > 0):
            real = self.estimator.estimate(self._estimator_input(self._real_dynamics(plan), self.cursor, plan,
                                                                 policy_fn))
        finite = real.rollout.finite
        metrics["guard/nonfinite_transitions"] = (~finite).sum()
        metrics["guard/masked_envs"] = (~healthy_envs(real.rollout, self.env)).sum()
        self.episodes.track(real.rollout, finite, real.fresh_episodes, metrics)
        self.cursor = real.rollout.end
        metrics["_steps"] = real.rollout.steps * real.rollout.num_envs
        metrics["plan/horizon"] = float(real.rollout.steps)  # the window this iteration actually ran
        metrics["plan/env_weight"] = beta
        lam = plan.lam if plan.lam is not None else self.estimator.lam
        if lam is not None:
            metrics["plan/lam"] = float(lam)
        self.env_steps += metrics["_steps"]
        self.cost.steps += metrics["_steps"]
        metrics.update(real.metrics)
        if self._needs_contact:
            metrics.update(contact_metrics(self.env, real.rollout, finite))
        return real, finite, split

    def _model_branches(self, plan: Plan, metrics: dict[str, Any]) -> Estimate | None:
        """The estimator's loss through the world model from buffer states (``None`` when none runs)."""
        if self.model_update is None:
            return None
        starts = self.model_update.branch_starts(plan)
        if starts is None:
            return None
        branch_plan = attrs.evolve(plan, horizon=plan.model_horizon or plan.horizon)
        branch = self.estimator.estimate(self._estimator_input(self.world_model, Cursor(starts, None), branch_plan,
                                                               generator=self.model_update.branch_generator))
        metrics["loss/actor_model"] = branch.loss.detach()
        return branch

    def _real_dynamics(self, plan: Plan):
        """What the real window steps through: the env, or what the world-model learner wraps it in."""
        if self.model_update is not None:
            return self.model_update.real_dynamics(plan)
        if plan.jacobian_blend > 0:
            raise UserError(f"{component_label('scheduler', self.scheduler)} planned jacobian_blend = "
                            f"{plan.jacobian_blend} but the run has no world model")
        return self.env

    def _estimator_input(self, dynamics, start: Cursor, plan: Plan = Plan(), policy_fn=None,
                         generator: torch.Generator | None = None) -> EstimatorInput:
        return EstimatorInput(
            policy_fn=policy_fn or self.actor_update.policy_fn,
            value_fn=self.critic_update.target_value,
            env=self.env,
            dynamics=dynamics,
            start=start,
            generator=self.generator if generator is None else generator,
            horizon=plan.horizon,
            lam=plan.lam,
        )

    def _set_learning_rates(self, plan: Plan) -> None:
        """``optim.lr_schedule`` (the loop's, whatever the scheduler) times the plan's own scales."""
        scale = self.optim_cfg.lr_scale(self.iteration, self.planned_total())
        for group in self.actor_opt.param_groups:
            group["lr"] = self.optim_cfg.actor_lr * scale * plan.actor_lr_scale
        for group in self.critic_opt.param_groups:
            group["lr"] = self.optim_cfg.critic_lr * scale * plan.critic_lr_scale

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
        self.guard.report(metrics, out, self.iteration + 1, self.env.diverged_magnitude)
        out["env/steps"] = float(self.env_steps * self.ranks)
        return out

    # ------------------------------------------------------------------ plan and budget (budget.py)
    def finished(self) -> bool:
        """True once the run's budget is spent: ``run.iterations`` updates, or ``run.env_steps`` env steps."""
        return budget.finished(self.run, self.iteration, self.env_steps)

    def planned_total(self) -> int:
        """The ``total`` schedulers see (:func:`~mbmix_fw.training.budget.planned_total`)."""
        first_window = self.estimator.horizon(self.env) * self.env.num_envs
        return budget.planned_total(self.run, self.iteration, self.env_steps, first_window)

    def _next_plan(self, total: int) -> Plan:
        """The scheduler's plan for ``self.iteration`` (its one ``plan`` call of the iteration), given the
        previous iteration's metrics (empty at iteration 0; the last checkpointed row after a resume),
        with the last window of an env-step budget cut to it."""
        plan = self._plan(self.iteration, total, MappingProxyType(dict(self._last_metrics)))
        budget.check_plan(plan, self.scheduler, self.estimator, self.env, self.iteration)  # before the budget cut
        plan = budget.cut_to_budget(plan, self.run, self.env_steps, self.estimator, self.env)
        if self.iteration == 0 and self.world_model is not None and not (plan.model_branches or plan.model_fit_steps):
            log.warning("a world model is configured but %s neither fits nor uses it in the first iteration; "
                        "use a scheduler such as 'dyna'", type(self.scheduler).__name__)
        return plan

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> float:
        """Mean undiscounted return of ``run.eval_envs`` full episodes with the deterministic policy."""
        return self.evaluator.mean_return()

    def evaluation_returns(self, episodes: int | None = None) -> torch.Tensor:
        """Undiscounted returns ``[episodes]`` (default ``run.eval_envs``): :meth:`Evaluator.returns`."""
        return self.evaluator.returns(episodes)

    # ------------------------------------------------------------------ checkpoints
    def _roles(self) -> list[Any]:
        """The roles whose ``state_entries`` make up the checkpoint, each saying what it keeps."""
        roles = [self.guard, self.cost, self.actor_update, self.critic_update]
        return roles if self.model_update is None else [*roles, self.model_update]

    def _stateful_components(self) -> dict[str, Any]:
        """The components whose optional ``state_dict()`` / ``load_state_dict()`` the checkpoint carries
        (:func:`~mbmix_fw.training.run_state.component_state`)."""
        return {"env": self.env, "estimator": self.estimator, "scheduler": self.scheduler}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"format": 1, "iteration": self.iteration, "env_steps": self.env_steps,
                                 "world_model": None, "buffer": None, "model_rollbacks": 0, "model_best": None}
        for role in self._roles():
            state.update(role.state_entries())
        state.update({
            "components": {name: component_state(c, name) for name, c in self._stateful_components().items()},
            "cursor_state": self.cursor.state,
            "cursor_t": self.cursor.t,
            "episode_return": self.episodes.running,
            "device": self.device.type,
            "rng": rng_state(self.generator, self.device),
            "log": self.log.state_dict(),
        })
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_device(state["device"], self.device)
        self.iteration, self.env_steps = state["iteration"], state["env_steps"]
        for name, component in self._stateful_components().items():
            load_component_state(component, state.get("components", {}).get(name))
        for role in self._roles():
            role.load_state_entries(state)
        self.cursor = Cursor(state["cursor_state"].to(self.device), state["cursor_t"].to(self.device))
        self.episodes.running = state["episode_return"].to(self.device)
        restore_rng(state["rng"], self.generator)
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
                    if nonfinite_entries(state[name])]
        if poisoned:  # the guards should make this unreachable; never overwrite a good checkpoint with it
            raise TrainingDiverged(f"refusing to checkpoint non-finite {', '.join(poisoned)} at iteration "
                                   f"{self.iteration}; first non-finite: {self.guard.first_nonfinite or 'unknown'}")
        return save_checkpoint_file(state, Path(path))

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`; ``train()`` then continues from it.

        Loaded onto the CPU: RNG states must stay CPU byte tensors, and every module, optimiser and
        buffer moves its own tensors onto the trainer's device.
        """
        self.load_state_dict(load_checkpoint_file(Path(path), map_location="cpu"))
