"""Recipe keys that moved (``building/moved_keys.py``). The learning-rate schedule is the training loop's
(``optim.lr_schedule``), not the scheduler's: a third-party scheduler that knows nothing of it still gets the
recipe's decay, and a recipe that still says ``scheduler.lr_schedule`` runs as it did, with one warning line
naming the file and the key; likewise the critic's ``lam``, now ``critic.td_lambda``."""
from __future__ import annotations

import json
import logging
import textwrap
import types
from typing import Literal

import mbmix_estimators
import mbmix_schedulers
import mbmix_toy
import pytest
import mbmix_fw as mb
from mbmix_fw.building.build import make_trainer
from mbmix_fw.building.resumable import refuse_unresumable
from mbmix_fw.training.run_folder import STARTED_RECIPE


class SteadyConfig(mb.SchedulerConfig):
    kind: Literal["steady"] = "steady"


class Steady(mb.Scheduler):
    """A third party's scheduler: it plans a window and says nothing about learning rates."""

    def __init__(self, config: SteadyConfig, ctx: mb.BuildContext | None = None):
        self.config = config

    def plan(self, iteration, total, metrics=mb.NO_METRICS):
        return mb.Plan(env_weight=1.0)


def _plugin() -> types.ModuleType:
    module = types.ModuleType("lr_schedule_test_plugin")
    module.register_schedulers = mb.hookimpl(lambda register: register(SteadyConfig, Steady))
    return module


@pytest.fixture
def registry():
    return mb.make_registry(_plugin(), mbmix_toy, mbmix_estimators, mbmix_schedulers)


ITERATIONS, ACTOR_LR, CRITIC_LR = 4, 0.01, 0.02


def recipe_text(scheduler: str, optim: str = "") -> str:
    return textwrap.dedent(f"""
        [run]
        iterations = {ITERATIONS}
        device = "cpu"
        eval_envs = 2

        [env]
        kind = "lqr"
        num_envs = 4
        episode_length = 8

        [estimator]
        kind = "shac"
        horizon = 2

        [scheduler]
        {scheduler}

        [optim]
        actor_lr = {ACTOR_LR}
        critic_lr = {CRITIC_LR}
        {optim}
        """)


def learning_rates(recipe: mb.Recipe, registry) -> tuple[list[float], float]:
    """``lr/actor`` of each update, and the critic's rate in the last one."""
    trainer = make_trainer(recipe, None, "cpu", registry, progress=False)
    trainer.train()
    return [row["lr/actor"] for row in trainer.log.history[1:]], trainer.critic_opt.param_groups[0]["lr"]


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_a_scheduler_that_knows_nothing_of_learning_rates_gets_the_recipes_schedule(tmp_path, registry, schedule):
    path = tmp_path / "steady.toml"
    path.write_text(recipe_text('kind = "steady"', f'lr_schedule = "{schedule}"'))
    actor, critic = learning_rates(mb.load_recipe(path, registry), registry)
    scale = [1 - k / ITERATIONS if schedule == "linear" else 1.0 for k in range(ITERATIONS)]
    assert actor == pytest.approx([ACTOR_LR * s for s in scale], rel=1e-12)
    assert critic == pytest.approx(CRITIC_LR * scale[-1], rel=1e-12)


def test_the_deprecated_scheduler_key_warns_once_and_still_sets_the_schedule(tmp_path, registry, caplog):
    path = tmp_path / "old.toml"
    path.write_text(recipe_text('kind = "model_free"\nlr_schedule = "constant"'))
    with caplog.at_level(logging.WARNING, logger="mbmix_fw"):
        recipe = mb.load_recipe(path, registry)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: scheduler.lr_schedule: deprecated, read as optim.lr_schedule; move it to [optim]"]
    assert recipe.optim.lr_schedule == "constant" and recipe.scheduler.model_dump() == {"kind": "model_free"}
    actor, _ = learning_rates(recipe, registry)
    assert actor == [ACTOR_LR] * ITERATIONS  # the default would have decayed


def test_the_old_and_new_key_disagreeing_is_one_line_naming_both(tmp_path, registry):
    path = tmp_path / "both.toml"
    path.write_text(recipe_text('kind = "model_free"\nlr_schedule = "constant"', 'lr_schedule = "linear"'))
    with pytest.raises(mb.RecipeError) as caught:
        mb.load_recipe(path, registry)
    assert caught.value.problems == [f"{path}: scheduler.lr_schedule: moved to optim.lr_schedule, which this "
                                     f"recipe also sets, to another value ('linear', here 'constant'); keep "
                                     f"only optim.lr_schedule"]


def test_a_run_started_with_the_old_key_resumes_only_with_the_same_schedule(tmp_path):
    """The recipe a run started with is read as recipe.json is: the moved key compared where it lives now."""
    (tmp_path / STARTED_RECIPE).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / STARTED_RECIPE).write_text(json.dumps(
        {"scheduler": {"kind": "model_free", "lr_schedule": "constant"}, "optim": {"actor_lr": 0.01}}))
    same = {"scheduler": {"kind": "model_free"}, "optim": {"actor_lr": 0.01, "lr_schedule": "constant"}}
    refuse_unresumable(same, tmp_path, "recipe.json")
    changed = {"scheduler": {"kind": "model_free"}, "optim": {"actor_lr": 0.01, "lr_schedule": "linear"}}
    with pytest.raises(mb.UserError, match=r"^recipe.json: optim.lr_schedule is \"linear\" but the run started "
                                           r"with \"constant\""):
        refuse_unresumable(changed, tmp_path, "recipe.json")


def test_the_critics_old_lam_key_is_read_as_td_lambda(tmp_path, registry, caplog):
    """``lam`` names only the mix estimator's λ; the critic's TD(λ) is ``critic.td_lambda``."""
    path = tmp_path / "old_critic.toml"
    path.write_text(recipe_text('kind = "model_free"') + "\n[critic]\nlam = 0.8\n")
    with caplog.at_level(logging.WARNING, logger="mbmix_fw"):
        recipe = mb.load_recipe(path, registry)
    assert recipe.critic.td_lambda == 0.8
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: critic.lam: deprecated, read as critic.td_lambda; move it to [critic]"]


def test_a_set_of_the_old_key_still_wins_over_the_files_new_one(tmp_path, registry, caplog):
    path = tmp_path / "new.toml"
    path.write_text(recipe_text('kind = "model_free"', 'lr_schedule = "linear"'))
    with caplog.at_level(logging.WARNING, logger="mbmix_fw"):
        recipe = mb.load_recipe(path, registry, ['scheduler.lr_schedule="constant"'])
    assert recipe.optim.lr_schedule == "constant"
    assert [r.getMessage() for r in caplog.records] == [
        '--set scheduler.lr_schedule="constant": scheduler.lr_schedule: deprecated, read as optim.lr_schedule']
