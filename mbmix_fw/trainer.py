"""The training loop: executes the scheduler's plan with an estimator, an env and (optionally) a world model.

Read it top to bottom: ``train`` → ``_iterate`` (one policy update) → helpers. Everything a run needs to
continue bit-for-bit after a crash (weights, optimisers, RNG states, env batch state, buffer, metric
history) is in the checkpoint, written atomically.
"""
from __future__ import annotations

import copy
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .checkpoint import load_checkpoint_file, save_checkpoint_file
from .env import DiffEnv
from .errors import UserError
from .estimator import Estimate, EstimatorInput, GradientEstimator
from .metrics import MetricsLog
from .nets import Critic, ObsNormalizer, TanhGaussianPolicy
from .returns import lambda_returns
from .rollouts import Cursor, Rollout
from .scheduler import Plan, Scheduler
from .settings import CriticSettings, OptimSettings, PolicySettings, RunSettings
from .world_model import WorldModel

log = logging.getLogger("mbmix_fw")

CHECKPOINT = Path("checkpoints") / "last.pt"
EVAL_TRANSITIONS = 256  # held-out transitions per iteration for world-model error metrics


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch's global RNGs (the run's own generator is seeded separately)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


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

        self.policy = TanhGaussianPolicy(
            env.obs_dim, env.action_dim, policy.hidden, policy.activation, policy.layer_norm,
            policy.init_log_std, policy.squash,
        ).to(self.device)
        self.critic = Critic(env.obs_dim, critic.hidden, critic.activation, critic.layer_norm).to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.obs_norm = ObsNormalizer(env.obs_dim).to(self.device) if policy.normalize_obs else None
        self.actor_opt = torch.optim.Adam(self.policy.parameters(), lr=optim.actor_lr, betas=optim.betas)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=optim.critic_lr, betas=optim.betas)

        self.buffer = None
        if world_model is not None:
            from .buffer import ReplayBuffer

            world_model.to(self.device)
            self.buffer = ReplayBuffer(
                getattr(world_model, "buffer_capacity", 100_000), env.state_dim, env.action_dim,
                world_model.probes, self.device,
            )

        if world_model is not None:
            first = scheduler.plan(0, run.iterations)
            if not (first.model_branches or first.model_fit_steps):
                log.warning("a world model is configured but %s never fits or uses it; use a scheduler "
                            "such as 'dyna'", type(scheduler).__name__)
        self.cursor = Cursor(
            env.reset(env.num_envs, self.generator),
            torch.zeros(env.num_envs, dtype=torch.long, device=self.device),
        )
        self.episode_return = torch.zeros(env.num_envs, device=self.device)
        self.iteration = 0
        self.env_steps = 0
        self.skipped_updates = 0
        self.log = MetricsLog(self.out_dir)
        self.grad_sync: Callable[[torch.nn.Module], None] | None = None
        """Called with the module after every ``backward`` (and when a non-finite loss skips it), before
        clipping: data-parallel training averages gradients across ranks here (mbmix_fw/distributed/ddp.py)."""

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict[str, float]:
        """Run the remaining iterations (all of them, or those left after ``load_checkpoint``)."""
        total = self.run.iterations
        bar = self._progress_bar(total)
        if self.iteration == 0:
            self.log.set_initial_eval(self.evaluate())
        try:
            while self.iteration < total:
                started = time.perf_counter()
                metrics = self._iterate(self.scheduler.plan(self.iteration, total))
                self.iteration += 1
                elapsed = time.perf_counter() - started
                metrics["time/iteration_s"] = elapsed
                metrics["time/steps_per_s"] = metrics.pop("_steps") / max(elapsed, 1e-9)
                last = self.iteration == total
                if last or (self.run.eval_every and self.iteration % self.run.eval_every == 0):
                    metrics["eval/return"] = self.evaluate()
                self.log.append(self.iteration, metrics)
                if self.hooks is not None:
                    self.hooks.on_iteration_end(run_dir=self.out_dir, iteration=self.iteration, metrics=metrics)
                if last or self.iteration % self.run.checkpoint_every == 0:
                    self.save_checkpoint()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(ret=f"{self.log.latest('train/return'):.1f}",
                                    sps=f"{metrics['time/steps_per_s']:.0f}")
        finally:
            if bar is not None:
                bar.close()
            self.log.close()
        final = self.log.final_metrics()
        if self.hooks is not None:
            self.hooks.on_run_end(run_dir=self.out_dir, metrics=final)
        return final

    def _iterate(self, plan: Plan) -> dict[str, float]:
        """One policy update: real window → model branches → policy step → critic → model fit."""
        self._set_learning_rates(plan)
        metrics: dict[str, float] = {}
        beta = plan.env_weight

        # ---- real rollout through the simulator (always: it advances the env and feeds the buffer)
        with torch.set_grad_enabled(beta > 0):
            real = self.estimator.estimate(self._estimator_input(self.env, self.cursor))
        self._track_episode_returns(real.rollout, metrics)
        self.cursor = real.rollout.end
        metrics["_steps"] = real.rollout.steps * real.rollout.num_envs
        self.env_steps += metrics["_steps"]
        for key, value in real.metrics.items():
            metrics[key] = value

        # ---- model branches from buffer states
        branch: Estimate | None = None
        if plan.model_branches and self.world_model is not None and len(self.buffer) > 0:
            starts = self.buffer.sample_states(plan.model_branches, self.generator)
            branch = self.estimator.estimate(self._estimator_input(self.world_model, Cursor(starts, None)))
            metrics["loss/actor_model"] = float(branch.loss.detach())

        # ---- policy update on β·L_env + (1-β)·L_model
        loss = beta * real.loss if beta > 0 else None
        if branch is not None:
            term = (1.0 - beta) * branch.loss
            loss = term if loss is None else loss + term
        if loss is not None and loss.requires_grad:
            metrics["loss/actor"] = float(loss.detach())
            metrics["grad/actor_norm"] = self._guarded_step(loss, self.policy, self.actor_opt, "actor")
        if self.world_model is not None:
            self.world_model.zero_grad(set_to_none=True)  # the branch loss reached the model's weights

        # ---- critic on TD(λ) targets of every rollout of this iteration
        if self.estimator.uses_critic:
            rollouts = [real.rollout] + ([branch.rollout] if branch is not None else [])
            metrics["loss/critic"] = self._update_critic(rollouts, plan)
            self._polyak_target()

        # ---- world model: held-out error on the new window, then fit on the buffer
        if self.world_model is not None:
            metrics.update(self._update_world_model(real.rollout, plan))

        if self.obs_norm is not None:
            self.obs_norm.update(real.rollout.obs.detach())
        metrics["guard/skipped_updates"] = float(self.skipped_updates)
        metrics["env/steps"] = float(self.env_steps)
        metrics["lr/actor"] = self.actor_opt.param_groups[0]["lr"]
        return metrics

    # ------------------------------------------------------------------ pieces of an iteration
    def _normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return self.obs_norm.normalize(obs) if self.obs_norm is not None else obs

    def _estimator_input(self, dynamics, start: Cursor) -> EstimatorInput:
        return EstimatorInput(
            policy_fn=lambda obs, g: self.policy(self._normalize(obs), g),
            value_fn=lambda obs: self.target_critic(self._normalize(obs)),
            env=self.env,
            dynamics=dynamics,
            start=start,
            generator=self.generator,
        )

    def _set_learning_rates(self, plan: Plan) -> None:
        for group in self.actor_opt.param_groups:
            group["lr"] = self.optim_cfg.actor_lr * plan.actor_lr_scale
        for group in self.critic_opt.param_groups:
            group["lr"] = self.optim_cfg.critic_lr * plan.critic_lr_scale

    def _guarded_step(self, loss: torch.Tensor, module: torch.nn.Module, opt: torch.optim.Optimizer,
                      name: str) -> float:
        """Backward, clip, step — unless the loss or gradient is NaN/inf: then skip, count and log."""
        opt.zero_grad(set_to_none=True)
        if not _finite(loss.detach()):
            if self.grad_sync is not None:
                self.grad_sync(module)  # still take part: every rank then sees a non-finite gradient
            return self._skip(module, opt, name, "loss")
        loss.backward()
        if self.grad_sync is not None:
            self.grad_sync(module)
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), self.optim_cfg.grad_clip)
        if not _finite(norm):
            return self._skip(module, opt, name, "gradient")
        opt.step()
        return float(norm)

    def _skip(self, module, opt, name: str, what: str) -> float:
        opt.zero_grad(set_to_none=True)
        self.skipped_updates += 1
        log.warning("iteration %d: non-finite %s %s; update skipped (%d skipped so far)",
                    self.iteration, name, what, self.skipped_updates)
        return float("nan")

    def _update_critic(self, rollouts: list[Rollout], plan: Plan) -> float:
        """SHAC's critic: regress V on TD(λ) targets from the target critic, in shuffled minibatches."""
        gamma, cfg = self.estimator.gamma, self.critic_cfg
        obs_all, target_all = [], []
        with torch.no_grad():
            for r in rollouts:
                next_values = self.target_critic(self._normalize(r.next_obs))
                targets = lambda_returns(r.rewards.detach(), next_values, r.terminated, r.done, gamma, cfg.lam)
                obs_all.append(self._normalize(r.obs.detach()).reshape(-1, r.obs.shape[-1]))
                target_all.append(targets.reshape(-1))
        obs, targets = torch.cat(obs_all), torch.cat(target_all)
        iterations = plan.critic_iterations if plan.critic_iterations is not None else cfg.iterations
        batch = math.ceil(obs.shape[0] / cfg.minibatches)
        losses = []
        for _ in range(iterations):
            order = torch.randperm(obs.shape[0], generator=self.generator, device=self.device)
            for chunk in order.split(batch):
                loss = (self.critic(obs[chunk]) - targets[chunk]).pow(2).mean()
                self._guarded_step(loss, self.critic, self.critic_opt, "critic")
                losses.append(float(loss.detach()))
        return float(np.mean(losses)) if losses else float("nan")

    @torch.no_grad()
    def _polyak_target(self) -> None:
        tau = self.critic_cfg.target_tau
        for target, online in zip(self.target_critic.parameters(), self.critic.parameters()):
            target.mul_(tau).add_(online, alpha=1.0 - tau)

    def _update_world_model(self, rollout: Rollout, plan: Plan) -> dict[str, float]:
        from .probes import collect_eval_transitions, collect_transitions

        started = time.perf_counter()
        flat = lambda x: x.detach().reshape(-1, x.shape[-1])  # noqa: E731 - [T, N, D] -> [T*N, D]
        states, actions, next_states = flat(rollout.states), flat(rollout.actions), flat(rollout.next_states)
        fresh = collect_transitions(
            self.env, states, actions, self.world_model.probes, self.generator, next_state=next_states,
        )
        metrics = {}
        if len(self.buffer) > 0:
            # The new window is held out (the model never trained on it). Its error is measured against
            # the full simulator Jacobian on small envs and random probes on large ones, for every model
            # (the α = 0 ablation included), on a random subsample to bound the cost.
            pick = torch.randperm(states.shape[0], generator=self.generator, device=self.device)
            pick = pick[:EVAL_TRANSITIONS]
            held_out = collect_eval_transitions(
                self.env, states[pick], actions[pick], self.generator, next_state=next_states[pick],
            )
            metrics.update(self.world_model.evaluate(held_out))
        self.buffer.add(fresh)
        fit: dict[str, list[float]] = {}
        for _ in range(plan.model_fit_steps):
            batch = self.buffer.sample(self.world_model.batch_size, self.generator)
            for key, value in self.world_model.fit(batch).items():
                fit.setdefault(key, []).append(value)
        metrics.update({k: float(np.mean(v)) for k, v in fit.items()})
        metrics["buffer/size"] = float(len(self.buffer))
        metrics["time/model_s"] = time.perf_counter() - started
        return metrics

    def _track_episode_returns(self, rollout: Rollout, metrics: dict[str, float]) -> None:
        """Undiscounted returns of the episodes that finished in this window (``train/return``)."""
        rewards, done = rollout.rewards.detach(), rollout.done
        if not torch.equal(rollout.states[0].detach(), self.cursor.state):
            self.episode_return.zero_()  # the estimator started fresh episodes (BPTT)
        finished = []
        for t in range(rollout.steps):
            self.episode_return += rewards[t]
            if bool(done[t].any()):
                finished.append(self.episode_return[done[t]].clone())
                self.episode_return = torch.where(done[t], torch.zeros_like(self.episode_return),
                                                  self.episode_return)
        if finished:
            metrics["train/return"] = float(torch.cat(finished).mean())
            metrics["train/episodes"] = float(torch.cat(finished).numel())

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean undiscounted return of ``run.eval_envs`` full episodes with the deterministic policy.

        Uses its own generator seeded from the run seed, so every evaluation sees the same initial
        states and evaluation never perturbs training's random stream.
        """
        g = torch.Generator(device=self.device).manual_seed(self.run.seed + 1_000_003)
        state = self.env.reset(self.run.eval_envs, g)
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
        return float(total.mean())

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "format": 1,
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "skipped_updates": self.skipped_updates,
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

    def save_checkpoint(self, path: str | Path | None = None) -> Path | None:
        """Write the full training state atomically (``checkpoints/last.pt`` in the run folder)."""
        if path is None:
            if self.out_dir is None:
                return None
            path = self.out_dir / CHECKPOINT
        if not all(_finite(p) for p in self.policy.parameters()):
            raise FloatingPointError("refusing to checkpoint a policy with non-finite parameters")
        return save_checkpoint_file(self.state_dict(), Path(path))

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`; ``train()`` then continues from it.

        Loaded onto the CPU: RNG states must stay CPU byte tensors, and every module, optimiser and
        buffer moves its own tensors onto the trainer's device.
        """
        self.load_state_dict(load_checkpoint_file(Path(path), map_location="cpu"))

    def _progress_bar(self, total: int):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=self.iteration, desc="train", unit="it", dynamic_ncols=True)
