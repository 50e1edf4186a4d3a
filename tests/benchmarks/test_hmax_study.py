"""``benchmarks/hmax_study.py``: every run of the window-length sweep spends the same env steps and, MB-MIX
included, the same simulator calls, and its overrides make valid recipes (checked without training: a run
of a Newton robot costs minutes)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import mbmix_fw as mb
from mbmix_fw.building.recipe import parse_override

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # its sibling study_jobs
    spec = importlib.util.spec_from_file_location("hmax_study", ROOT / "benchmarks" / "hmax_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("env", ["cartpole", "hopper", "ant"])
def test_every_method_and_window_gets_the_same_budget_in_valid_recipes(study, env):
    registry = mb.default_registry()
    budgets = set()
    for method in ("shac", "mix", "mbmix"):
        for horizon in study.HMAX:
            recipe_path, sets = study.settings(env, method, horizon, 32)
            recipe = mb.load_recipe(ROOT / recipe_path, registry, [parse_override(s) for s in sets])
            assert recipe.estimator.horizon == horizon and recipe.run.threads == 1
            assert (recipe.run.env_steps // recipe.env.num_envs) % horizon == 0  # whole iterations
            budgets.add((recipe.run.env_steps, recipe.run.eval_every_env_steps))
            if method == "mbmix":
                # The model's bookkeeping costs no simulator call, and it fits per transition, not per iteration.
                assert recipe.run.model_error_probes == "window"
                assert recipe.world_model.probe_source == "adjoint"
                assert recipe.scheduler.model_fit_steps == 0 and recipe.scheduler.model_fit_per_transition > 0
                assert recipe.scheduler.warmup_env_steps == recipe.run.env_steps // 4
    assert budgets == {(16 * 192 * 32, 16 * 192 * 32 // study.EVALUATIONS)}


def test_an_unknown_method_stops_before_any_run(study):
    with pytest.raises(SystemExit, match="unknown method"):
        study.settings("hopper", "ppo", 16, 4)


def test_an_ablations_runs_live_apart_and_are_collected_by_their_label(study, tmp_path, capsys):
    out = study.run_folder(tmp_path, "hopper", "mbmix", 64, 3, "_mh16")
    assert out == tmp_path / "hopper" / "mbmix_mh16_H64_s3"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"x")
    header = "iteration,eval/return,time/wall_s,env/steps,sim/steps,sim/vjps\n"
    rows = "".join(f"{i},{10.0 * i},{i},{i * 1536},{i * 1536},{i * 1536}\n" for i in range(5))
    (out / "metrics.csv").write_text(header + rows)
    common = ["--env", "hopper", "--methods", "mbmix", "--horizons", "64", "--units", "32", "--seeds", "1",
              "--first-seed", "3", "--root", str(tmp_path), "--collect-only", "--json", str(tmp_path / "runs.json")]
    assert study.main([*common, "--label", "_mh16", "--set", "scheduler.model_horizon=16"]) == 0
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert [(r["method"], r["horizon"], r["seed"], r["score"]) for r in runs] == [("mbmix", 64, 3, 30.0)]
    assert study.main(common) == 0  # without the label the study's own folder is looked for: none finished
    assert json.loads((tmp_path / "runs.json").read_text()) == []


def test_an_ablations_overrides_come_after_the_studys_own(study, tmp_path, monkeypatch):
    seen = {}

    def train(recipe, out, seed, sets):
        seen.update(recipe=recipe, out=out, seed=seed, sets=list(sets))
        return ["stopped before training"]

    monkeypatch.setattr(study, "train", train)
    result = study.run_one(tmp_path, "hopper", "mbmix", 64, 4, 32, ("scheduler.model_horizon=16",), "_mh16")
    assert result["error"] == ["stopped before training"]
    assert seen["out"] == tmp_path / "hopper" / "mbmix_mh16_H64_s4" and seen["seed"] == 4
    assert seen["sets"][-1] == "scheduler.model_horizon=16"  # last, so it wins over the study's settings
    assert seen["sets"][:-1] == study.settings("hopper", "mbmix", 64, 32)[1]
