"""Metric names: the one string API between components, declared in one place.

Why: a scheduler that plans from ``model/jacobian_error_a`` depends on a world model that reports it. When
metric names were bare strings spread over modules, a world model whose ``evaluate`` returned nothing made a
gated ``dyna`` silently never use its model. Producers now declare what they report
(:attr:`WorldModel.reports <mbmix_fw.WorldModel>`, :attr:`GradientEstimator.reports`), consumers what they read
(:attr:`Scheduler.reads <mbmix_fw.Scheduler>`), and the build refuses a run whose consumer lacks its producer
(:func:`unproduced`).
"""
from __future__ import annotations

from typing import Iterable

EVAL_RETURN = "eval/return"
EVAL_NONFINITE_EPISODES = "eval/nonfinite_episodes"
TRAIN_RETURN = "train/return"
ENV_STEPS = "env/steps"
LOSS_ACTOR = "loss/actor"
LOSS_CRITIC = "loss/critic"
GRAD_ACTOR_NORM = "grad/actor_norm"
PLAN_HORIZON = "plan/horizon"
SIM_STEPS, SIM_VJPS = "sim/steps", "sim/vjps"
MODEL_STATE_ERROR = "model/state_error"
MODEL_JACOBIAN_ERROR = "model/jacobian_error"
MODEL_JACOBIAN_ERROR_S = "model/jacobian_error_s"
MODEL_JACOBIAN_ERROR_A = "model/jacobian_error_a"
MODEL_GRAD_SHARE = "model/grad_share"
CONTACT_STIFFNESS = "contact/stiffness"
CONTACT_STIFFNESS_FIRST_STEP = "contact/stiffness_first_step"
HALF_COSINE = "grad/half_cosine"
ACTOR_UPDATED = "grad/actor_updated"
"""1 when the iteration ran a policy update (tried a step: a non-finite one is skipped but counted), 0 when no
term of the actor loss carried a gradient. Read it to know whether an update ran, not the presence of keys."""

HELD_OUT_MODEL_ERRORS = frozenset({MODEL_STATE_ERROR, MODEL_JACOBIAN_ERROR, MODEL_JACOBIAN_ERROR_S,
                                   MODEL_JACOBIAN_ERROR_A})
"""What the built-in world models' ``evaluate`` reports (the Jacobian errors when the held-out batch carries
probes or full Jacobians, which the trainer gives every model that asks for probes or fits a small env)."""

TRAINER_METRICS = frozenset({EVAL_RETURN, TRAIN_RETURN, ENV_STEPS, LOSS_ACTOR, LOSS_CRITIC, GRAD_ACTOR_NORM,
                             ACTOR_UPDATED, PLAN_HORIZON, SIM_STEPS, SIM_VJPS})
"""Logged by the trainer itself in every run (``train/return`` once an episode ended; ``loss/critic`` with a
critic; ``eval/return`` on evaluation rows)."""


def unproduced(reads: Iterable[str], *producers: Iterable[str]) -> list[str]:
    """The metrics in ``reads`` that no producer reports (sorted)."""
    produced = set(TRAINER_METRICS).union(*producers)
    return sorted(set(reads) - produced)
