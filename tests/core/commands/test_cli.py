"""The ``mbmix-fw`` CLI: exit codes, one-line errors, nothing written on bad input, the plugins listing,
run → resume, and the diagnose dispatch (``report``: test_report.py)."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Literal

import mbmix_schedulers
import pytest
import torch
from pydantic import Field

import mbmix_fw as mb
from mbmix_fw.commands.cli import main
from mbmix_fw.testing import LinearEnv
from mbmix_fw.testing import user_error_lines as error_lines



# ---- a small but real plugin: LinearEnv and a total-reward (BPTT-style) estimator ----
class LinearConfig(mb.EnvConfig):
    kind: Literal["linear"] = "linear"
    num_envs: int = Field(4, ge=1)
    episode_length: int = Field(6, ge=1)


class TotalRewardConfig(mb.EstimatorConfig):
    kind: Literal["total_reward"] = "total_reward"
    horizon: int = Field(3, ge=1)
    gamma: float = Field(0.99, gt=0.0, le=1.0)


class TotalReward(mb.GradientEstimator):
    """Minus the mean reward of one differentiable window: the smallest real estimator."""

    uses_critic = False

    def __init__(self, config: TotalRewardConfig, ctx: mb.BuildContext):
        self.config, self.gamma = config, config.gamma

    def horizon(self, env):
        return self.config.horizon

    def estimate(self, inp):
        window = mb.rollout(inp.policy_fn, inp.env, inp.dynamics, inp.start, self.config.horizon, inp.generator)
        return mb.Estimate(-window.rewards.mean(), window, {})


class CrashConfig(mb.EnvConfig):
    kind: Literal["crash"] = "crash"


class WrongTypeConfig(mb.EnvConfig):
    kind: Literal["wrong_type"] = "wrong_type"


class NeedsJaxConfig(mb.EnvConfig):
    kind: Literal["needs_jax"] = "needs_jax"


def crash(config, ctx):
    raise RuntimeError("simulated plugin bug")


def needs_jax(config, ctx):
    mb.require("jax_missing_for_test", extra="brax")


def _register_envs(register):
    register(LinearConfig, lambda config, ctx: LinearEnv(num_envs=config.num_envs,
                                                         episode_length=config.episode_length, ctx=ctx))
    register(CrashConfig, crash)
    register(WrongTypeConfig, lambda config, ctx: "not an env")
    register(NeedsJaxConfig, needs_jax)


def _module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, function in hooks.items():
        setattr(module, hook, mb.hookimpl(function))
    return module


TEST_PLUGIN = _module("cli_test_plugin", register_envs=_register_envs,
                      register_estimators=lambda register: register(TotalRewardConfig, TotalReward))
BROKEN_PLUGIN = _module("cli_broken_plugin", register_env=lambda register: None)


@pytest.fixture
def registry():
    return mb.make_registry(TEST_PLUGIN, mbmix_schedulers)


GOOD = """
[run]
seed = 0
iterations = 2
device = "cpu"
eval_envs = 2
checkpoint_every = 1

[env]
kind = "linear"

[estimator]
kind = "total_reward"

[policy]
hidden = [8]

[critic]
hidden = [8]
iterations = 1
"""


def write(folder: Path, text: str, name: str = "exp.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


# ---- validate ----
def test_validate_reports_every_problem_of_every_file(tmp_path, registry, capsys):
    good = write(tmp_path, GOOD, "good.toml")
    bad1 = write(tmp_path, GOOD.replace('"linear"', '"lineer"'), "bad1.toml")
    bad2 = write(tmp_path, GOOD.replace("seed = 0", "sede = 0").replace("iterations = 2", "iterations = 0"),
                 "bad2.toml")
    assert main(["validate", str(good)], registry=registry) == 0
    assert capsys.readouterr().out == f"{good}: ok\n"

    assert main(["validate", str(bad1), str(good), str(bad2)], registry=registry) == 2
    captured = capsys.readouterr()
    assert error_lines(captured.err) == [
        f"{bad1}: env.kind: unknown env kind 'lineer' (did you mean 'linear'?); available: crash, linear, "
        f"needs_jax, wrong_type",
        f"{bad2}: run.iterations: Input should be greater than or equal to 1, got 0",
        f"{bad2}: run.sede: unknown field (did you mean 'seed'?)",
    ]
    assert captured.out == f"{good}: ok\n"


# ---- run: every class of bad input exits 2 with one line per problem and writes nothing ----
BAD_RUNS = {
    "unknown kind": (GOOD.replace('"linear"', '"lineer"'), []),
    "unknown field": (GOOD.replace("seed = 0", "sede = 0"), []),
    "out of range": (GOOD.replace("iterations = 2", "iterations = -3"), []),
    "wrong type": (GOOD.replace("seed = 0", 'seed = "zero"'), []),
    "toml syntax": (GOOD.replace("[env]", "[env"), []),
    "missing table": (GOOD.replace('[estimator]\nkind = "total_reward"', ""), []),
    "missing file": (None, []),
    "malformed --set": (GOOD, ["--set", "estimator.horizon"]),
    "bad --set value": (GOOD, ["--set", "estimator.horizon=0"]),
    "unknown kind by --set": (GOOD, ["--set", "estimator.kind=ppo"]),
    "factory returns the wrong type": (GOOD.replace('"linear"', '"wrong_type"'), []),
    "missing optional dependency": (GOOD.replace('"linear"', '"needs_jax"'), []),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_run_exits_2_and_creates_no_run_folder(tmp_path, monkeypatch, registry, capsys, case):
    text, extra = BAD_RUNS[case]
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "exp.toml" if text is None else write(tmp_path, text)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--out", str(out), "--no-progress", *extra], registry=registry) == 2
    lines = error_lines(capsys.readouterr().err)
    assert all(line.startswith((str(recipe), "--set", "plugin 'cli_test_plugin'")) for line in lines), lines
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # not even runs/{name}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown when CUDA is missing")
def test_cuda_without_cuda_is_a_user_error(tmp_path, registry, capsys):
    recipe = write(tmp_path, GOOD)
    assert main(["run", str(recipe), "--device", "cuda", "--out", str(tmp_path / "out")], registry=registry) == 2
    assert error_lines(capsys.readouterr().err) == [
        "device 'cuda' requested but CUDA is not available; use --device cpu or auto"]
    assert not (tmp_path / "out").exists()


def test_usage_errors_exit_2():
    for argv in (["frobnicate"], ["run"], ["plugins", "--jsn"], ["diagnose", "variance", "x", "--samples", "0"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2


def test_internal_error_exits_1_with_a_traceback_only_when_asked(tmp_path, monkeypatch, registry, capsys):
    monkeypatch.delenv("MBMIX_FW_DEBUG", raising=False)
    recipe = write(tmp_path, GOOD.replace('"linear"', '"crash"'))
    args = ["run", str(recipe), "--out", str(tmp_path / "out")]
    assert main(args, registry=registry) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["mbmix-fw: internal error: RuntimeError: simulated plugin bug",
                                "mbmix-fw: run with -v (or MBMIX_FW_DEBUG=1) for the traceback"]
    assert main(["-v", *args], registry=registry) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main([*args, "--verbose"], registry=registry) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("MBMIX_FW_DEBUG", "1")
    assert main(args, registry=registry) == 1
    assert "while building env 'crash' with plugin 'cli_test_plugin'" in capsys.readouterr().err


# ---- plugins ----
def test_plugins_json_lists_components_and_broken_plugins(capsys):
    twin = _module("cli_twin", register_estimators=lambda register: register(TotalRewardConfig, TotalReward))
    registry = mb.make_registry(TEST_PLUGIN, mbmix_schedulers, BROKEN_PLUGIN, twin)
    assert main(["plugins", "--json"], registry=registry) == 0
    rows = json.loads(capsys.readouterr().out)
    keys = {"extension_point", "kind", "plugin", "distribution", "status", "error"}
    assert all(set(row) == keys for row in rows)
    by_kind = {(r["extension_point"], r["kind"], r["plugin"]): r for r in rows}
    assert by_kind[("env", "linear", "cli_test_plugin")]["status"] == "ok"
    assert by_kind[("scheduler", "dyna", "mbmix_schedulers")]["error"] is None
    conflict = by_kind[("estimator", "total_reward", "cli_twin")]
    assert conflict["status"] == "broken" and "registered by 2 plugins" in conflict["error"]
    broken = [r for r in rows if r["plugin"] == "cli_broken_plugin"]
    assert broken == [{"extension_point": None, "kind": None, "plugin": "cli_broken_plugin",
                       "distribution": None, "status": "broken",
                       "error": "unknown hook 'register_env' (did you mean 'register_envs'?)"}]


def test_plugins_table_shows_kinds_failures_and_verbose_fields(capsys):
    registry = mb.make_registry(TEST_PLUGIN, mbmix_schedulers, BROKEN_PLUGIN)
    assert main(["plugins"], registry=registry) == 0
    out = capsys.readouterr().out
    assert "cli_test_plugin" in out and "estimator: total_reward" in out
    assert "plugin 'cli_broken_plugin' not loaded: unknown hook 'register_env'" in out
    assert main(["plugins", "--verbose"], registry=registry) == 0
    out = capsys.readouterr().out
    assert 'dual_lr_schedule: "constant" | "linear" = "linear"\n' in out
    assert "          ``linear``: ``dual_lr`` decays to ``dual_lr / 50`` over the run" in out


def test_plugins_table_stays_aligned_with_long_names(capsys):
    """Each column is as wide as its longest entry: a long distribution name shifts it, never breaks it."""
    import attrs

    class LongKindConfig(mb.SchedulerConfig):
        kind: Literal["a_scheduler_kind_longer_than_twenty"] = "a_scheduler_kind_longer_than_twenty"

    long_named = _module("a_plugin_module_with_a_long_name", register_envs=_register_envs,
                         register_schedulers=lambda register: register(LongKindConfig, lambda c, ctx: None))
    registry = mb.make_registry(long_named, mbmix_schedulers)
    registry.plugins[0] = attrs.evolve(registry.plugins[0], distribution="mbmix-example-scheduler-for-long-names",
                                       version="0.1.0")
    assert main(["plugins"], registry=registry) == 0
    out = capsys.readouterr().out
    rows = out.split("plugins:\n", 1)[1].split("\nenv:", 1)[0].splitlines()
    assert len(rows) == 2
    starts = {row.index("env: " if "env: " in row else "scheduler: ") for row in rows}
    assert "a_scheduler_kind_longer_than_twenty from" in out
    assert len(starts) == 1, rows  # the kinds column starts at the same place in both rows
    kind_rows = [line for line in out.splitlines() if " from " in line]
    assert len({line.index(" from ") for line in kind_rows}) == 1, kind_rows


def test_installed_plugins_json_imports_no_heavy_package():
    """Listing plugins imports neither torch nor any optional heavy package, so it is instant (the time
    itself is measured by ``benchmarks/plugins_startup.py``: tests make no wall-clock assertions)."""
    code = textwrap.dedent("""
        import sys
        from mbmix_fw.commands.cli import main
        rc = main(["plugins", "--json"])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "jax", "jaxlib", "warp", "brax"})
        print("HEAVY", heavy, file=sys.stderr)
        sys.exit(rc)
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {"pendulum", "shac", "model_free"} <= {r["kind"] for r in rows}
    report = proc.stderr.strip().splitlines()[-1].split()
    assert report == ["HEAVY", "[]"], proc.stderr


# ---- run → files → resume ----
def test_run_writes_resolved_recipe_and_plugins_then_resume_continues(tmp_path, monkeypatch, registry, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = write(tmp_path, GOOD, "linear_total.toml")
    assert main(["run", str(recipe), "--no-progress", "--set", "estimator.horizon=2"], registry=registry) == 0
    run_dir = tmp_path / "runs" / "linear_total"  # run.out = "runs/{name}"
    assert f"run finished: {Path('runs/linear_total')}" in capsys.readouterr().out
    for name in ("recipe.json", "plugins.json", "metrics.csv", "checkpoints/last.pt"):
        assert (run_dir / name).is_file(), name
    resolved = json.loads((run_dir / "recipe.json").read_text())
    assert resolved["estimator"] == {"kind": "total_reward", "horizon": 2, "gamma": 0.99}
    assert resolved["scheduler"] == {"kind": "model_free"} and resolved["optim"]["lr_schedule"] == "linear"
    assert mb.validate_recipe(resolved, registry) == mb.load_recipe(recipe, registry, ["estimator.horizon=2"])
    plugins = {p["name"]: p for p in json.loads((run_dir / "plugins.json").read_text())}
    assert plugins["cli_test_plugin"]["provides"] == ["env", "estimator"]
    assert plugins["mbmix_schedulers"]["provides"] == ["scheduler"]
    assert len(_rows(run_dir)) == 3  # row 0: the initial evaluation

    # the same folder again: refused, nothing changed
    assert main(["run", str(recipe), "--no-progress"], registry=registry) == 2
    assert "already holds a run" in capsys.readouterr().err

    # extend the run by one iteration and resume it from its checkpoint
    resolved["run"]["iterations"] = 3
    (run_dir / "recipe.json").write_text(json.dumps(resolved))
    assert main(["resume", str(run_dir), "--no-progress"], registry=registry) == 0
    assert [int(r["iteration"]) for r in _rows(run_dir)] == [0, 1, 2, 3]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_resume_without_a_run_folder_or_checkpoint_is_a_user_error(tmp_path, registry, capsys):
    assert main(["resume", str(tmp_path / "nope")], registry=registry) == 2
    assert error_lines(capsys.readouterr().err) == [f"{tmp_path / 'nope'}: no such run folder"]
    (tmp_path / "run").mkdir()
    assert main(["resume", str(tmp_path / "run")], registry=registry) == 2
    recipe = tmp_path / "run" / "recipe.json"
    assert error_lines(capsys.readouterr().err) == [
        f"{recipe}: no such file; is {tmp_path / 'run'} a run folder written by 'mbmix-fw run'?"]
    # recipe.json without a checkpoint: a run stopped before its first one, resumed from the start
    # (tests/core/commands/test_run_stopped_early.py) once its recipe validates
    recipe.write_text("{}")
    assert main(["resume", str(tmp_path / "run")], registry=registry) == 2
    assert error_lines(capsys.readouterr().err)[0].startswith(f"{recipe}: ")


def test_resume_validates_the_saved_recipe(tmp_path, registry, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    (run / "recipe.json").write_text(json.dumps({"env": {"kind": "gone"}, "estimator": {"kind": "total_reward"}}))
    assert main(["resume", str(run)], registry=registry) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"{run / 'recipe.json'}: env.kind: unknown env kind 'gone'; available: crash, linear, needs_jax, wrong_type"]


def test_builtin_pendulum_with_shac_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = write(tmp_path, """
        [run]
        iterations = 2
        eval_envs = 2
        [env]
        kind = "pendulum"
        num_envs = 4
        episode_length = 16
        [estimator]
        kind = "shac"
        horizon = 8
        [policy]
        hidden = [16]
        [critic]
        hidden = [16]
        iterations = 2
        """, "pendulum_shac.toml")
    assert main(["run", str(recipe), "--device", "cpu", "--no-progress", "--out", "r/{name}"]) == 0
    run_dir = tmp_path / "r" / "pendulum_shac"
    rows = _rows(run_dir)
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]
    assert math.isfinite(float(rows[-1]["eval/return"]))
    plugins = {p["name"]: p for p in json.loads((run_dir / "plugins.json").read_text())}
    assert plugins["toy"]["provides"] == ["env"] and plugins["toy"]["distribution"] == "mbmix-fw"
    assert main(["resume", str(run_dir), "--no-progress"]) == 0
    assert len(_rows(run_dir)) == 3  # already finished: resuming adds nothing
    capsys.readouterr()


# ---- diagnose ----
def test_diagnose_validates_the_recipe_first(tmp_path, registry, capsys):
    recipe = write(tmp_path, GOOD.replace('"linear"', '"lineer"'))
    out = tmp_path / "v.json"
    assert main(["diagnose", "variance", str(recipe), "--json", str(out)], registry=registry) == 2
    assert error_lines(capsys.readouterr().err)[0].startswith(f"{recipe}: env.kind: unknown env kind 'lineer'")
    assert not out.exists()
    assert main(["diagnose", "variance", str(write(tmp_path, GOOD, "ok.toml")), "--checkpoint",
                 str(tmp_path / "none.pt")], registry=registry) == 2
    assert error_lines(capsys.readouterr().err) == [f"{tmp_path / 'none.pt'}: no such checkpoint file"]


def test_diagnose_variance_runs_on_the_builtin_lqr(tmp_path, capsys):
    registry = mb.load_registry()
    recipe = write(tmp_path, """
        [run]
        device = "cpu"
        [env]
        kind = "lqr"
        [estimator]
        kind = "shac"
        horizon = 4
        [policy]
        hidden = []
        normalize_obs = false
        squash = false
        [critic]
        hidden = [8]
        """)
    out = tmp_path / "variance.json"
    code = main(["diagnose", "variance", str(recipe), "--samples", "3", "--critic-iterations", "2",
                 "--json", str(out)], registry=registry)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(out.read_text())["rows"]
    assert captured.out.splitlines()[0].split() == ["estimator", "H", "λ", "variance", "|mean", "g|", "bias",
                                                    "±", "s.e.", "rel.", "bias", "noise", "floor"]
    assert "shac H=4" in captured.out and "{" not in captured.out  # a table, not JSON
    assert captured.out.rstrip().endswith(f"wrote {out}")
    code = main(["diagnose", "variance", str(recipe), "--samples", "3", "--critic-iterations", "2",
                 "--json", "-"], registry=registry)
    captured = capsys.readouterr()
    assert code == 0 and [row["label"] for row in json.loads(captured.out)][-1] == "mix λ=1 H=4"
    assert not (tmp_path / "-").exists()


# ---- outputs where they belong ----
def test_errors_from_a_set_override_name_the_override(tmp_path, registry, capsys):
    recipe = write(tmp_path, GOOD)
    argv = ["validate", str(recipe), "--set", "estimator.horizon=0", "--set", "run.sede=1",
            "--set", "policy.hidden=[8, 0]", "--set", "run.seed=3"]
    assert main(argv, registry=registry) == 2
    assert sorted(error_lines(capsys.readouterr().err)) == sorted([
        "--set estimator.horizon=0: estimator.horizon: Input should be greater than or equal to 1, got 0",
        "--set run.sede=1: run.sede: unknown field (did you mean 'seed'?)",
        "--set policy.hidden=[8, 0]: policy.hidden.1: Input should be greater than or equal to 1, got 0",
    ])
    bad_file = write(tmp_path, GOOD.replace("seed = 0", "seed = -1"), "bad.toml")
    assert main(["validate", str(bad_file), "--set", "run.iterations=3"], registry=registry) == 2
    assert error_lines(capsys.readouterr().err) == [  # the file's own mistake still names the file
        f"{bad_file}: run.seed: Input should be greater than or equal to 0, got -1"]


def test_an_existing_folder_that_is_not_a_run_is_refused(tmp_path, registry, capsys):
    recipe = write(tmp_path, GOOD)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    assert main(["run", str(recipe), "--out", str(notes), "--no-progress"], registry=registry) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"{notes}: exists, is not empty and is not a run folder; choose another folder with --out "
        f"(a new or empty one)"]
    assert [p.name for p in notes.iterdir()] == ["todo.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run", str(recipe), "--out", str(empty), "--no-progress"], registry=registry) == 0
    assert (empty / "metrics.csv").is_file()


def test_resuming_a_finished_run_says_it_is_finished(tmp_path, registry, capsys):
    recipe = write(tmp_path, GOOD)
    run_dir = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(run_dir), "--no-progress"], registry=registry) == 0
    capsys.readouterr()
    before = (run_dir / "metrics.csv").read_text()
    assert main(["resume", str(run_dir), "--no-progress"], registry=registry) == 0
    assert capsys.readouterr().out == (
        f"{run_dir}: already finished (2 of 2 iterations); nothing to resume. To train longer, raise "
        f"run.iterations in {run_dir / 'recipe.json'} and resume again (a resume honours changes to run.iterations, run.env_steps, run.eval_every, "
        f"run.eval_every_env_steps, run.checkpoint_every, run.max_skipped_iterations, run.device, run.out only)\n")
    assert (run_dir / "metrics.csv").read_text() == before


def test_resuming_a_run_that_spent_its_env_step_budget_says_so(tmp_path, registry, capsys):
    recipe = write(tmp_path, GOOD.replace("iterations = 2", "iterations = 50\nenv_steps = 3"))
    run_dir = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(run_dir), "--no-progress"], registry=registry) == 0
    capsys.readouterr()
    assert main(["resume", str(run_dir), "--no-progress"], registry=registry) == 0
    steps = float(_rows(run_dir)[-1]["env/steps"])
    assert steps >= 3 and capsys.readouterr().out == (
        f"{run_dir}: already finished ({steps:.0f} of 3 env steps); nothing to resume. To train longer, raise "
        f"run.env_steps in {run_dir / 'recipe.json'} and resume again (a resume honours changes to run.iterations, run.env_steps, run.eval_every, "
        f"run.eval_every_env_steps, run.checkpoint_every, run.max_skipped_iterations, run.device, run.out only)\n")


def test_an_empty_plugin_allow_list_is_named_when_no_env_is_registered(tmp_path, monkeypatch, capsys):
    recipe = write(tmp_path, '[env]\nkind = "pendulum"\n[estimator]\nkind = "shac"\n')
    monkeypatch.delenv("MBMIX_FW_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("MBMIX_FW_PLUGINS", "")
    assert main(["validate", str(recipe)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert lines[0] == (
        f"{recipe}: env.kind: unknown env kind 'pendulum'; no env plugin is registered; note: MBMIX_FW_PLUGINS "
        f"is set but empty, so no installed plugin was loaded; unset it or name the plugins to load "
        f"(e.g. MBMIX_FW_PLUGINS=toy,estimators,schedulers)")
    monkeypatch.setenv("MBMIX_FW_PLUGINS", "estimators")
    assert main(["validate", str(recipe)]) == 2
    assert error_lines(capsys.readouterr().err)[0].endswith(
        "no env plugin is registered; note: MBMIX_FW_PLUGINS=estimators loads only these plugins")
    monkeypatch.delenv("MBMIX_FW_PLUGINS")
    assert main(["validate", str(recipe)]) == 0


@pytest.mark.parametrize("name", ["..toml", "...toml"])
def test_a_recipe_named_dots_does_not_run_into_runs_itself(tmp_path, monkeypatch, registry, capsys, name):
    """``runs/{name}`` with the stem ``.`` is ``runs/`` itself (``..``: the working directory)."""
    monkeypatch.chdir(tmp_path)
    recipe = write(tmp_path, GOOD, name)
    (tmp_path / "runs").mkdir()
    assert main(["run", str(recipe), "--no-progress"], registry=registry) == 2
    line, = error_lines(capsys.readouterr().err)
    assert line.startswith(f"{recipe}: run.out = 'runs/{{name}}' names the run folder after the recipe's file "
                           f"name, which gives '{Path(name).stem}'"), line
    assert list((tmp_path / "runs").iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [name, "runs"]
    assert main(["run", str(recipe), "--no-progress", "--out", "runs/dots"], registry=registry) == 0
