"""Built-in schedulers: ``model_free`` (SHAC/BPTT/MIX through the simulator) and ``dyna`` (MB-MIX)."""
from __future__ import annotations

from typing import Literal, Mapping

from pydantic import Field

import mbmix_fw as mb


def _lr_scale(schedule: str, iteration: int, total: int) -> float:
    """Linear decay to 0 over the run, or constant. (DiffRL's SHAC decays linearly too, but to an
    absolute 1e-5 at its last epoch rather than to 0.)"""
    return 1.0 - iteration / total if schedule == "linear" else 1.0


class ModelFreeConfig(mb.SchedulerConfig):
    kind: Literal["model_free"] = "model_free"
    lr_schedule: Literal["constant", "linear"] = "linear"
    """Learning-rate schedule for actor and critic: linear decays to 0 (DiffRL's SHAC ends at 1e-5)."""


class ModelFree(mb.Scheduler):
    """Every iteration: one simulator window, policy loss through the simulator only (β = 1)."""

    def __init__(self, config: ModelFreeConfig, ctx: mb.BuildContext | None = None):
        self.config = config

    def plan(self, iteration: int, total: int, metrics: Mapping[str, float] = mb.NO_METRICS) -> mb.Plan:
        scale = _lr_scale(self.config.lr_schedule, iteration, total)
        return mb.Plan(env_weight=1.0, actor_lr_scale=scale, critic_lr_scale=scale)


class DynaConfig(mb.SchedulerConfig):
    requires_world_model = True
    kind: Literal["dyna"] = "dyna"
    env_weight: float = Field(0.5, ge=0.0, le=1.0)
    """β: weight of the simulator-rollout loss; 1-β goes to model branches. β=1 is pure simulator
    training (the model is still fitted), β=0 pure model-based."""
    model_branches: mb.NumEnvs = 64
    """Start states drawn from the replay buffer for model rollouts each iteration."""
    model_fit_steps: int = Field(8, ge=0, le=10_000)
    """World-model minibatch steps per iteration (K)."""
    warmup_iterations: mb.Iterations = 5
    """Iterations of pure simulator training (β=1, model fitted but unused) before model branches start,
    so the policy never follows an untrained model."""
    lr_schedule: Literal["constant", "linear"] = "linear"
    """Learning-rate schedule for actor and critic: ``linear`` decays to 0 over ``run.iterations`` (SHAC),
    ``constant`` keeps ``optim.actor_lr`` and ``optim.critic_lr``."""


class Dyna(mb.Scheduler):
    """MB-MIX's regime: simulator windows feed the buffer; the policy also learns through model branches."""

    def __init__(self, config: DynaConfig, ctx: mb.BuildContext | None = None):
        self.config = config

    def plan(self, iteration: int, total: int, metrics: Mapping[str, float] = mb.NO_METRICS) -> mb.Plan:
        cfg = self.config
        scale = _lr_scale(cfg.lr_schedule, iteration, total)
        warming = iteration < cfg.warmup_iterations
        return mb.Plan(
            env_weight=1.0 if warming else cfg.env_weight,
            model_branches=0 if warming or cfg.env_weight == 1.0 else cfg.model_branches,
            model_fit_steps=cfg.model_fit_steps,
            actor_lr_scale=scale,
            critic_lr_scale=scale,
        )


@mb.hookimpl
def register_schedulers(register):
    register(ModelFreeConfig, ModelFree)
    register(DynaConfig, Dyna)
