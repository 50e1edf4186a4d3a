"""The run's budget and the scheduler's plan made executable: when a run is finished, how many iterations
the schedulers should plan for, when to evaluate, the last window cut to an env-step budget, and a plan
checked against what the estimator can honour.

Pure functions of the run's settings and counters, so the rules can be read (and tested) apart from the
loop that applies them.
"""
from __future__ import annotations

import attrs

from ..contracts.component import component_label
from ..contracts.env import DiffEnv
from ..contracts.estimator import GradientEstimator
from ..contracts.scheduler import Plan, Scheduler
from ..contracts.settings import RunSettings
from ..errors import UserError


def finished(run: RunSettings, iteration: int, env_steps: int) -> bool:
    """True once the run's budget is spent: ``run.iterations`` updates, or ``run.env_steps`` env steps."""
    budget = run.env_steps
    return iteration >= run.iterations or (budget > 0 and env_steps >= budget)


def planned_total(run: RunSettings, iteration: int, env_steps: int, first_window_steps: int) -> int:
    """The ``total`` schedulers see: ``run.iterations``, or under an env-step budget the projected count,
    iterations so far plus the remaining budget over the mean env steps per iteration so far
    (``first_window_steps``, the estimator's configured window times the env count, before the first),
    capped at ``run.iterations``. Integer arithmetic, so a fixed window that divides the budget projects
    exactly ``budget / (H·N)`` at every iteration."""
    budget, cap = run.env_steps, run.iterations
    if not budget:
        return cap
    remaining = max(budget - env_steps, 0)
    if iteration and env_steps:
        ahead = -(-remaining * iteration // env_steps)
    else:
        ahead = -(-remaining // first_window_steps)
    return min(cap, max(iteration + ahead, iteration + 1))


def evaluation_due(run: RunSettings, iteration: int, env_steps: int, steps_before: int) -> bool:
    """After an iteration: every ``run.eval_every`` iterations, or when ``env/steps`` crossed a multiple of
    ``run.eval_every_env_steps`` during it (from ``steps_before`` to ``env_steps``)."""
    every, steps_every = run.eval_every, run.eval_every_env_steps
    return bool((every and iteration % every == 0)
                or (steps_every and env_steps // steps_every > steps_before // steps_every))


def cut_to_budget(plan: Plan, run: RunSettings, env_steps: int, estimator: GradientEstimator,
                  env: DiffEnv) -> Plan:
    """Under an env-step budget, the last window cut to the remaining steps, rounded up to a multiple of the
    estimator's ``horizon_multiple`` (``mix``: its interval), and at least its shortest window. An
    estimator that honours one window length only (``horizon_bounds`` low = high) runs it whole."""
    budget = run.env_steps
    if not budget:
        return plan
    planned = plan.horizon if plan.horizon is not None else estimator.horizon(env)
    low, high = estimator.horizon_bounds(env)
    step = max(1, int(estimator.horizon_multiple(env)))
    needed = -(-(budget - env_steps) // env.num_envs)
    cut = max(-(-low // step) * step, -(-needed // step) * step)
    if low == high or cut >= planned:
        return plan
    return attrs.evolve(plan, horizon=cut)


def check_plan(plan: Plan, scheduler: Scheduler, estimator: GradientEstimator, env: DiffEnv,
               iteration: int) -> None:
    """Refuse, before the iteration runs, a plan outside what its scheduler declared or what the estimator
    honours: one-line :class:`UserError` naming the scheduler (:func:`component_label`) and the iteration.

    Declarations first (``horizon_range`` for ``horizon``, ``plans_lam`` for ``lam``): the build checked
    them against the estimator, so a plan inside them always fits, and a plan outside them is the
    scheduler's bug, named as such. The estimator's own limits are checked too, for what no declaration
    covers (``model_horizon``) and for trainers built in Python without the build's checks."""
    who = f"{component_label('scheduler', scheduler)} (iteration {iteration})"
    declared = getattr(scheduler, "horizon_range", None)
    if plan.horizon is not None:
        if declared is None:
            raise UserError(f"{who} planned horizon {plan.horizon} but declares no horizon_range; a scheduler "
                            f"that sets Plan.horizon declares horizon_range = (H_min, H_max)")
        if not declared[0] <= plan.horizon <= declared[1]:
            raise UserError(f"{who} planned horizon {plan.horizon}, outside its declared horizon_range "
                            f"{tuple(declared)}; fix the scheduler (its plans must stay in the range)")
    if plan.lam is not None and not getattr(scheduler, "plans_lam", False):
        raise UserError(f"{who} planned lam {plan.lam} but does not declare plans_lam = True")
    what = component_label("estimator", estimator)
    low, high = estimator.horizon_bounds(env)
    step = int(estimator.horizon_multiple(env))
    for name in ("horizon", "model_horizon"):
        value = getattr(plan, name)
        if value is None:
            continue
        if not low <= value <= high:
            raise UserError(f"{who} planned {name} {value}, outside [{low}, {high}], the window "
                            f"lengths {what} honours")
        if value % step:
            raise UserError(f"{who} planned {name} {value}, not a multiple of {step}, which {what} needs")
    if plan.lam is not None and estimator.lam is None:
        raise UserError(f"{who} planned lam {plan.lam} but {what} mixes no windows (no λ)")
