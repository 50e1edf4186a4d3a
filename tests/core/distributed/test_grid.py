"""Sweep planning and bad input: every grid value is validated by the recipe's own validation before Ray is
imported or anything is written; one line per problem, exit 2."""
from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

import mbmix_fw as mb
from mbmix_fw.commands.cli import main
from mbmix_fw.distributed.grid import parse_grid_arg, parse_seeds, plan_sweep, point_name

RECIPE = """
[run]
iterations = 2
out = "{root}/{{name}}"

[env]
kind = "pendulum"
num_envs = 4

[estimator]
kind = "mix"
horizon = 4
{sweep}
"""


def recipe(tmp_path: Path, sweep: str = "") -> Path:
    path = tmp_path / "r.toml"
    path.write_text(RECIPE.format(root=tmp_path / "runs", sweep=sweep))
    return path


@pytest.fixture
def no_ray(monkeypatch):
    """Ray cannot be imported: a command that reached for it would fail with the install hint instead."""
    monkeypatch.setitem(sys.modules, "ray", None)


@pytest.mark.parametrize("args, message", [
    (["--grid", "estimator.lam=0.9,2.0"], "[grid estimator.lam=2.0]: estimator.lam: Input should be less than or equal to 1"),
    (["--grid", "estimator.horizon=4,four"], "estimator.horizon: expected an integer, got string"),
    (["--grid", "estimator.lamda=0.9"], "estimator.lamda: unknown field (did you mean 'lam'?)"),
    (["--grid", "run.seed=1,2"], "--grid run.seed=1,2: grid key 'run.seed' cannot be swept: use --seeds"),
    (["--grid", "estimator.lam="], "--grid estimator.lam=: expected section.key=v1,v2"),
    (["--seeds", "4-2"], "--seeds 4-2: seed range '4-2' is empty"),
    (["--seeds", "0,x"], "--seeds 0,x: 'x' is not a seed: expected a range like 0-4"),
    (["--address", "nowhere"], "--address nowhere: expected auto, HOST:PORT or ray://HOST:PORT"),
])
def test_bad_input_is_one_line_exit_2_nothing_written_no_ray(tmp_path, capsys, no_ray, args, message):
    assert main(["sweep", str(recipe(tmp_path)), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs").exists()


def test_without_ray_the_sweep_says_which_extra_to_install(tmp_path, capsys, no_ray):
    assert main(["sweep", str(recipe(tmp_path)), "--grid", "estimator.lam=0.5,1.0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "mbmix-fw: error: the sweep command needs Ray, which is not installed: pip install 'mbmix-fw[ray]'")
    assert not (tmp_path / "runs").exists()
    assert main(["validate", str(recipe(tmp_path))]) == 0  # every other command works without Ray


def test_an_address_nobody_answers_is_one_line_exit_2(tmp_path, capsys):
    import ray

    assert not ray.is_initialized()
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        assert main(["sweep", str(recipe(tmp_path)), "--address", address]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--address {address}: no Ray cluster answers" in err[0]
    assert not (tmp_path / "runs").exists() and not ray.is_initialized()


def test_the_sweep_table_is_validated_and_flags_override_it(tmp_path, capsys):
    table = '[sweep]\ngrid = {"estimator.lam" = [0.5, 1.0], "estimator.horizon" = [4, 8]}\nseeds = "1-3"\n'
    path = recipe(tmp_path, table)
    registry = mb.load_registry()
    plan = plan_sweep(path, registry)
    assert plan.name == "r_sweep" and plan.root == tmp_path / "runs" / "r_sweep"
    assert len(plan.trials) == 2 * 2 * 3
    assert plan.trials[0].name == "lam-0.5_horizon-4_seed-1"
    assert plan.trials[-1].recipe.estimator.lam == 1.0 and plan.trials[-1].recipe.run.seed == 3
    plan = plan_sweep(path, registry, grid=["estimator.lam=0.9"], seeds="0", name="mine")
    assert [t.name for t in plan.trials] == ["lam-0.9_horizon-4_seed-0", "lam-0.9_horizon-8_seed-0"]
    assert plan.root == tmp_path / "runs" / "mine"

    assert main(["validate", str(path)]) == 0  # the envelope accepts [sweep]...
    bad = recipe(tmp_path, "[sweep]\ngird = {}\n")
    assert main(["validate", str(bad)]) == 2  # ...and checks it like every table
    assert "sweep.gird: unknown field (did you mean 'grid'?)" in capsys.readouterr().err
    bad = recipe(tmp_path, '[sweep]\ngrid = {"estimator.lam" = []}\n')
    assert main(["validate", str(bad)]) == 2
    assert "grid 'estimator.lam' has no values" in capsys.readouterr().err


def test_run_ignores_the_sweep_table_and_recipe_json_never_holds_it(tmp_path):
    path = recipe(tmp_path, '[sweep]\ngrid = {"estimator.lam" = [0.5, 1.0]}\n')
    assert main(["run", str(path), "--no-progress", "--device", "cpu", "--set", "run.eval_envs=2"]) == 0
    data = json.loads((tmp_path / "runs" / "r" / "recipe.json").read_text())
    assert "sweep" not in data and data["estimator"]["lam"] == mb.load_recipe(path).estimator.lam


def test_seed_and_grid_parsing_and_trial_names():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4] and parse_seeds("0,2,5") == [0, 2, 5]
    assert parse_seeds("0-1,7") == [0, 1, 7] and parse_seeds([3, 1]) == [3, 1]
    with pytest.raises(ValueError, match="listed twice"):
        parse_seeds("0-2,1")
    assert parse_grid_arg("policy.hidden=[64,64],[128,128]") == ("policy.hidden", [[64, 64], [128, 128]])
    assert parse_grid_arg("estimator.kind=shac,mix") == ("estimator.kind", ["shac", "mix"])
    assert point_name({"estimator.lam": 0.9, "policy.hidden": [64, 64]}) == "lam-0.9_hidden-64x64"
    assert point_name({"policy.hidden": [8], "critic.hidden": [16]}) == "policy.hidden-8_critic.hidden-16"
    assert point_name({"run.device": "cuda:0"}) == "device-cuda-0"


def test_summary_ranks_grid_points_by_the_iqm_of_their_scores(tmp_path):
    """The sweep summary's statistics are report --group's: IQM [95 % interval] of the seeds' scores; the best
    point is the highest IQM, not the highest mean (one lucky seed does not win), and a diverged seed (NaN
    score) is left out of the statistic."""
    from mbmix_fw.distributed.summary import PointResult, best_point, format_table, write_summary
    from mbmix_fw.maths.statistics import summarize_scores

    lucky = PointResult("lam-0.5", {"lam": 0.5}, 4, [{"eval/return": x} for x in (1.0, 2.0, 3.0, 100.0)],
                        [1.0, 2.0, 3.0, 100.0])
    steady = PointResult("lam-0.9", {"lam": 0.9}, 4, [{"eval/return": x} for x in (9.0, 10.0, 11.0)],
                         [9.0, 10.0, 11.0, float("nan")])
    assert lucky.stats("eval/return")[0] > steady.stats("eval/return")[0]
    assert best_point([lucky, steady]) is steady
    assert steady.score_summary() == summarize_scores({"x": [9.0, 10.0, 11.0]})["x"]
    table = format_table([lucky, steady]).splitlines()
    assert table[2].startswith("*") and str(steady.score_summary()) in table[2]
    path = write_summary(tmp_path, ["lam"], [lucky, steady, PointResult("lam-1", {"lam": 1}, 2, [], [])])
    rows = path.read_text().splitlines()
    assert rows[0].startswith("point,lam,seeds_finished,seeds,score_iqm,score_low,score_high,")
    assert rows[1].split(",")[4] == repr(lucky.score_summary().iqm) == "2.5"
    assert rows[3].split(",")[4:7] == ["", "", ""]
