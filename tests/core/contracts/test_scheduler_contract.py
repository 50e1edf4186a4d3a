"""A scheduler plugin's declared contract, as a third party meets it from the CLI: what its plans may ask
for (``horizon_range``, ``plans_lam``) is checked against the estimator when the run is built, a dry first
plan catches what it plans without declaring, and each refusal is one line naming the scheduler the one
way every message names it, exit 2, with no run folder written."""
from __future__ import annotations

import textwrap
import types
from typing import Literal

import mbmix_estimators
import pytest
from pydantic import Field, model_validator

import mbmix_fw as mb
from mbmix_fw.commands.cli import main
from mbmix_fw.testing import LinearEnv


class LineConfig(mb.EnvConfig):
    kind: Literal["line"] = "line"
    num_envs: int = Field(4, ge=1)
    episode_length: int = Field(8, ge=1)


class FixedConfig(mb.SchedulerConfig):
    kind: Literal["fixed_plan"] = "fixed_plan"
    horizon: int | None = None
    lam: float | None = None
    min_horizon: int = 1
    max_horizon: int = 8
    declare_range: bool = True
    declare_lam: bool = False

    @model_validator(mode="after")
    def _range_not_empty(self) -> "FixedConfig":  # a check across fields, as a third party writes it
        if self.declare_range and self.max_horizon < self.min_horizon - 100:
            raise ValueError(f"max_horizon: below min_horizon={self.min_horizon} by more than 100")
        if self.lam is not None and self.lam > 0.99:
            raise ValueError("a λ this close to 1 is shac")  # names no field: the line stays at the table
        return self


class Fixed(mb.Scheduler):
    """Plans the configured horizon and λ every iteration, declaring what its config says it declares."""

    def __init__(self, config: FixedConfig, ctx: mb.BuildContext | None = None):
        self.config = config
        self.horizon_range = (config.min_horizon, config.max_horizon) if config.declare_range else None
        self.plans_lam = config.declare_lam
        self.calls = 0

    def plan(self, iteration, total, metrics=mb.NO_METRICS):
        self.calls += 1
        return mb.Plan(horizon=self.config.horizon, lam=self.config.lam)


def _plugin() -> types.ModuleType:
    module = types.ModuleType("contract_test_plugin")
    module.register_envs = mb.hookimpl(lambda register: register(
        LineConfig, lambda c, ctx: LinearEnv(num_envs=c.num_envs, episode_length=c.episode_length, ctx=ctx)))
    module.register_schedulers = mb.hookimpl(lambda register: register(FixedConfig, Fixed))
    return module


@pytest.fixture
def registry():
    return mb.make_registry(_plugin(), mbmix_estimators)


RECIPE = """
[run]
iterations = 2
device = "cpu"
eval_envs = 2
checkpoint_every = 1

[env]
kind = "line"

[estimator]
{estimator}

[scheduler]
kind = "fixed_plan"
{scheduler}

[policy]
hidden = [8]

[critic]
hidden = [8]
iterations = 1
"""

SHAC = 'kind = "shac"\nhorizon = 4'
MIX4 = 'kind = "mix"\nhorizon = 4\ninterval = 4'

REFUSED = {
    "plans λ for shac (declared)": (SHAC, "declare_lam = true\nlam = 0.5",
                                    "scheduler 'fixed_plan' plans λ (plans_lam = True) but estimator 'shac' "
                                    "mixes no windows (no λ); use an estimator with a λ (mix)"),
    "plans λ for shac (undeclared)": (SHAC, "lam = 0.5",
                                      "scheduler 'fixed_plan' (iteration 0) planned lam 0.5 but does not declare "
                                      "plans_lam = True"),
    "plans λ and a horizon, declaring only the range": (
        SHAC, "declare_lam = false\nlam = 0.5\nhorizon = 4",
        "scheduler 'fixed_plan' (iteration 0) planned lam 0.5 but does not declare plans_lam = True"),
    "a plan outside its declared range": (SHAC, "min_horizon = 4\nmax_horizon = 8\nhorizon = 64",
                                          "scheduler 'fixed_plan' (iteration 0) planned horizon 64, outside its "
                                          "declared horizon_range (4, 8); fix the scheduler (its plans must stay "
                                          "in the range)"),
    "a horizon without a declared range": (SHAC, "declare_range = false\nhorizon = 4",
                                           "scheduler 'fixed_plan' (iteration 0) planned horizon 4 but declares "
                                           "no horizon_range; a scheduler that sets Plan.horizon declares "
                                           "horizon_range = (H_min, H_max)"),
    "a range the estimator cannot roll": ('kind = "bptt"', "max_horizon = 9",
                                          "scheduler 'fixed_plan' plans horizons [1, 9] but estimator 'bptt' "
                                          "honours only [1, 8] on env 'line'; narrow the scheduler's horizon range"),
    "a range against mix's interval": (MIX4, "min_horizon = 4\nmax_horizon = 8",
                                       "scheduler 'fixed_plan' plans any horizon in [4, 8] but estimator 'mix' "
                                       "rolls only multiples of 4; use an estimator setting without that "
                                       "constraint (mix: interval = 1)"),
    "a malformed range": (SHAC, "min_horizon = 5\nmax_horizon = 4",
                          "scheduler 'fixed_plan': horizon_range must be (H_min, H_max), integers with "
                          "1 <= H_min <= H_max, got (5, 4)"),
}


def write(tmp_path, estimator, scheduler):
    path = tmp_path / "exp.toml"
    path.write_text(textwrap.dedent(RECIPE.format(estimator=estimator, scheduler=scheduler)))
    return path


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_scheduler_contract_the_estimator_cannot_honour_is_refused_at_build(tmp_path, monkeypatch, registry,
                                                                                capsys, case):
    estimator, scheduler, message = REFUSED[case]
    monkeypatch.chdir(tmp_path)
    recipe = write(tmp_path, estimator, scheduler)
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--out", str(out), "--no-progress"], registry=registry) == 2
    err = capsys.readouterr().err
    assert err == f"mbmix-fw: error: {message}\n"
    assert not out.exists()  # nothing written: the same --out works once the recipe is fixed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml"]


@pytest.mark.parametrize("estimator, scheduler", [
    (SHAC, "min_horizon = 4\nmax_horizon = 8\nhorizon = 8"),
    ('kind = "mix"\nhorizon = 4', "declare_lam = true\nlam = 0.5\nmin_horizon = 2\nmax_horizon = 6\nhorizon = 6"),
    (MIX4, "min_horizon = 8\nmax_horizon = 8\nhorizon = 8"),
])
def test_a_scheduler_within_its_declarations_runs(tmp_path, monkeypatch, registry, capsys, estimator, scheduler):
    monkeypatch.chdir(tmp_path)
    recipe = write(tmp_path, estimator, scheduler)
    assert main(["run", str(recipe), "--out", str(tmp_path / "out"), "--no-progress"], registry=registry) == 0


def test_the_dry_first_plan_leaves_the_schedulers_own_state_alone(registry):
    """The build's dry plan runs on a copy: the run's scheduler still plans exactly once per iteration."""
    from mbmix_fw.building.build import make_trainer
    from mbmix_fw.building.recipe import validate_recipe
    import tomllib

    data = tomllib.loads(RECIPE.format(estimator=SHAC, scheduler="horizon = 4"))
    trainer = make_trainer(validate_recipe(data, registry, "exp.toml"), None, "cpu", registry, progress=False)
    assert trainer.scheduler.calls == 0
    trainer.train()
    assert trainer.scheduler.calls == 2


@pytest.mark.parametrize("setting, line", [
    ("min_horizon = 200\nmax_horizon = 4", "scheduler.max_horizon: below min_horizon=200 by more than 100"),
    ("lam = 0.995", "scheduler: a λ this close to 1 is shac"),
])
def test_a_model_validator_names_the_field_its_message_starts_with(tmp_path, registry, capsys, setting, line):
    recipe = write(tmp_path, SHAC, setting)
    assert main(["validate", str(recipe)], registry=registry) == 2
    assert capsys.readouterr().err == f"mbmix-fw: error: {recipe}: {line}\n"
