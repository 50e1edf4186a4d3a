"""``benchmarks/learning_study.py``: the world model's room to act is sized in env steps (equal at every window
length), and the numbers a run's ``metrics.csv`` yields (score, curve, the model's share, env steps to a goal)."""
from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import pytest

import mbmix_fw as mb
from mbmix_fw.training.world_model_learner import WorldModelLearner
from mbmix_schedulers import Dyna

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("learning_study", ROOT / "benchmarks" / "learning_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("horizon", [8, 16, 32, 64])
def test_room_gives_the_model_the_same_data_budget_at_every_window_length(study, horizon):
    """``mbmix_room@H<n>``: branches from env step 1 280 on and 320 fit steps a run, whatever H; the twin
    ``beta1_room`` fits the same and never branches."""
    fitter = types.SimpleNamespace(world_model=types.SimpleNamespace(batch_size=128))
    for variant, twin in (("mbmix_room", False), ("beta1_room", True)):
        path, sets = study.settings(f"{variant}@H{horizon}")
        recipe = mb.load_recipe(ROOT / path, overrides=sets)
        assert recipe.estimator.horizon == horizon and recipe.run.env_steps == 5_120
        scheduler, per_window = Dyna(recipe.scheduler), horizon * recipe.env.num_envs
        iterations = recipe.run.env_steps // per_window
        fits, first_branch, metrics = 0, None, {}
        for k in range(iterations):
            plan = scheduler.plan(k, iterations, metrics)
            fits += WorldModelLearner.fit_steps(fitter, plan, per_window)
            if plan.model_branches and first_branch is None:
                first_branch = metrics["env/steps"]
            metrics = {"env/steps": float((k + 1) * per_window), mb.MODEL_JACOBIAN_ERROR_A: 0.99}
        assert fits == 320
        assert first_branch == (None if twin else 1_280.0 + (-1_280 % per_window))


def test_read_run_scores_the_second_half_and_counts_the_model_acting(study):
    rows = [{"iteration": "0", "env/steps": "", "eval/return": "1.0"}]
    for k, share in enumerate([0.0, 0.0, 0.2, 0.3], start=1):
        rows.append({"iteration": str(k), "env/steps": str(1_280 * k), "eval/return": str(10.0 * k),
                     "model/grad_share": str(share), "time/wall_s": "", "sim/steps": "", "sim/vjps": ""})
    rows[-1] |= {"time/wall_s": "12.5", "sim/steps": "5120", "sim/vjps": "5120"}
    run = study.read_run(rows, 5_120)
    assert run["curve"] == [[0.0, 1.0], [1280.0, 10.0], [2560.0, 20.0], [3840.0, 30.0], [5120.0, 40.0]]
    assert run["score"] == pytest.approx(30.0)  # 20, 30, 40: the last 3 of 4 evaluations
    assert run["final"] == 40.0 and run["model_used"] == 2 and run["grad_share"] == [0.0, 0.0, 0.2, 0.3]


def test_env_steps_to_reach_a_goal(study):
    runs = [{"seed": s, "score": v, "curve": [[0.0, 0.0], [512.0, v / 2], [1024.0, v]]}
            for s, v in enumerate([10.0, 12.0, 14.0, 16.0, 18.0])]
    curve = study.curve_summary(runs)
    assert [s for s, _ in curve] == [0.0, 512.0, 1024.0] and curve[2][1].iqm == pytest.approx(14.0)
    assert study.steps_to_reach(curve, 6.9) == 512.0
    assert study.steps_to_reach(curve, 13.9) == 1024.0 and study.steps_to_reach(curve, 14.5) is None
