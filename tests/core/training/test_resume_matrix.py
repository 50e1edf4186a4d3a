"""Every estimator × scheduler × world-model combination the repository's recipes ship resumes bit-exactly.

Why from the recipes: the promise "a resumed run ends with exactly the parameters of an uninterrupted one"
held only for the model-free recipe the kill test used, and MB-MIX runs could not be resumed at all once
their world model had been fitted (issue 24, item 1). The combinations are read from ``recipes/*.toml``,
so a recipe with a new combination is tested without editing this file. Each case keeps the recipe's
estimator, scheduler and world-model tables with their sizes shrunk (:data:`SMALL`), on a tiny pendulum
(a tiny cloth where the combination needs the cloth's contact signal or particle layout), and goes through
the same service ``mbmix-fw run`` / ``mbmix-fw resume`` use (:mod:`mbmix_fw.building.runs`): run, stop
right after a checkpoint (the world model fitted by then), resume, compare every tensor of the final
checkpoint with an uninterrupted run's. ``tests/core/training/test_resume_kill.py`` does the same with ``kill -9``.
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch

from mbmix_fw.building.registry import load_registry
from mbmix_fw.building.runs import open_saved_run, plan_run, resume_run, start_run

RECIPES = Path(__file__).resolve().parents[3] / "recipes"
SMALL = {"horizon": 4, "min_horizon": 2, "max_horizon": 6, "initial_horizon": 4, "model_horizon": 2,
         "model_branches": 4, "model_fit_steps": 2, "warmup_iterations": 1, "batch_size": 16,
         "buffer_capacity": 512, "interval": 1, "checkpoint_segments": 0}
"""Size settings of the estimator, scheduler and world-model tables, shrunk so a case takes seconds;
every other setting is the recipe's. ``hidden`` becomes ``[16]`` (a list) or 8 (a width)."""
ITERATIONS, STOP_AT = 6, 4
"""The world model is fitted from iteration 1 (``warmup_iterations = 1``), so the checkpoint at
``STOP_AT`` holds a fitted model and its optimiser moments."""
PENDULUM = {"kind": "pendulum", "num_envs": 4, "episode_length": 10}
CLOTH = {"kind": "cloth_fold", "num_envs": 2, "grid_size": 3, "episode_length": 8}


def shipped_combinations() -> dict[tuple[str, str, str], str]:
    """``(estimator, scheduler, world model or "none")`` → the first recipe that ships it."""
    found: dict[tuple[str, str, str], str] = {}
    for path in sorted(RECIPES.glob("*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        if "scheduler" not in data:  # a variance study (diagnose), not a training recipe
            continue
        key = (data["estimator"]["kind"], data["scheduler"]["kind"], data.get("world_model", {}).get("kind", "none"))
        found.setdefault(key, path.name)
    return found


COMBINATIONS = shipped_combinations()


def shrink(table: dict[str, Any]) -> dict[str, Any]:
    small = {key: SMALL.get(key, value) for key, value in table.items()}
    if "hidden" in small:
        small["hidden"] = [16] if isinstance(small["hidden"], list) else 8
    if "message_width" in small and small["message_width"]:
        small["message_width"] = 8
    return small


def small_recipe(recipe_name: str) -> dict[str, Any]:
    """The recipe's estimator, scheduler and world model, shrunk, on a tiny env with tiny nets."""
    data = tomllib.loads((RECIPES / recipe_name).read_text(encoding="utf-8"))
    needs_cloth = data["scheduler"]["kind"] == "ahac" or data.get("world_model", {}).get("kind") == "particle_gnn"
    recipe = {
        "run": {"seed": 1, "iterations": ITERATIONS, "checkpoint_every": 2, "eval_every": 3, "eval_envs": 2},
        "env": CLOTH if needs_cloth else PENDULUM,
        "policy": {"hidden": [16], "normalize_obs": not needs_cloth},
        "critic": {"hidden": [16], "iterations": 1, "minibatches": 2},
        "optim": data.get("optim", {}),
    }
    for table in ("estimator", "scheduler", "world_model"):
        if table in data:
            recipe[table] = shrink(data[table])
    return recipe


def write_toml(path: Path, recipe: dict[str, Any]) -> Path:
    """A recipe file from plain tables (JSON's scalars and lists are TOML's)."""
    lines = []
    for table, fields in recipe.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items() if value is not None]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor a resume restores, by dotted name, from the run's last checkpoint."""
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["iteration"] == ITERATIONS
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, torch.Tensor):
            tensors[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{prefix}.{i}")

    for entry in ("policy", "critic", "target_critic", "actor_opt", "critic_opt", "obs_norm", "world_model",
                  "buffer", "components", "cursor_state", "episode_return"):
        walk(state[entry], entry)
    return tensors


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_shipped_recipes_include_a_world_model_and_the_adaptive_schedulers():
    """Guards the matrix itself: were the recipes misread, the cases below would silently shrink."""
    assert ("mix", "dyna", "sobolev_mlp") in COMBINATIONS
    assert {"model_free", "dyna", "agree", "ahac"} <= {scheduler for _, scheduler, _ in COMBINATIONS}
    assert {"shac", "mix", "bptt"} <= {estimator for estimator, _, _ in COMBINATIONS}


@pytest.mark.parametrize("combination", sorted(COMBINATIONS), ids="-".join)
def test_stop_and_resume_matches_the_uninterrupted_run(combination, tmp_path, registry, crash_after_checkpoint):
    recipe = small_recipe(COMBINATIONS[combination])
    if recipe["env"]["kind"] == "cloth_fold":
        pytest.importorskip("warp")
    path = write_toml(tmp_path / "small.toml", recipe)

    def start(name: str):
        planned, out_dir = plan_run(path, registry, out=tmp_path / name)
        return start_run(planned, out_dir, registry, progress=False)

    start("full").train()
    crash_after_checkpoint(start("cut").trainer, STOP_AT)
    assert torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["iteration"] == STOP_AT
    resumed = resume_run(open_saved_run(tmp_path / "cut", registry), registry, progress=False)
    assert resumed.trainer.iteration == STOP_AT
    resumed.train()

    full, cut = final_state(tmp_path / "full"), final_state(tmp_path / "cut")
    if combination[2] != "none":
        assert any(".optimizer.state." in name for name in full), "the world model was never fitted"
    assert full.keys() == cut.keys()
    differ = [name for name in full if not torch.equal(full[name], cut[name])]
    assert not differ, f"differ after the resume: {differ[:5]}"


def test_a_finished_mbmix_run_extended_in_recipe_json_resumes(tmp_path, registry, capsys):
    """The report of issue 24, item 1: a finished MB-MIX run, ``run.iterations`` raised in ``recipe.json``,
    ``mbmix-fw resume`` refused it as "does not match recipe.json"."""
    from mbmix_fw.commands.cli import main

    path = write_toml(tmp_path / "small.toml", small_recipe(COMBINATIONS[("mix", "dyna", "sobolev_mlp")]))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run_dir), "--no-progress"], registry=registry) == 0
    saved = json.loads((run_dir / "recipe.json").read_text(encoding="utf-8"))
    saved["run"]["iterations"] = ITERATIONS + 2
    (run_dir / "recipe.json").write_text(json.dumps(saved), encoding="utf-8")
    capsys.readouterr()
    assert main(["resume", str(run_dir), "--no-progress"], registry=registry) == 0, capsys.readouterr().err
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["iteration"] == ITERATIONS + 2
