"""``benchmarks/study_jobs.py``: what the learning-study scripts share — when a run folder counts as finished
(a study restarted after a deadline reuses exactly those), and how failed runs are reported."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def jobs():
    spec = importlib.util.spec_from_file_location("study_jobs", ROOT / "benchmarks" / "study_jobs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(out: Path, last_wall_time: str, checkpoint: bool = True) -> None:
    (out / "checkpoints").mkdir(parents=True)
    if checkpoint:
        (out / "checkpoints" / "last.pt").write_bytes(b"x")
    (out / "metrics.csv").write_text(f"iteration,time/wall_s\n1,\n2,{last_wall_time}\n")


def test_a_run_is_finished_only_with_its_checkpoint_and_a_timed_last_row(jobs, tmp_path):
    write_run(tmp_path / "done", "12.5")
    write_run(tmp_path / "killed", "")  # a killed run's last row has no wall time
    write_run(tmp_path / "no_checkpoint", "12.5", checkpoint=False)
    assert jobs.finished(tmp_path / "done")
    assert not jobs.finished(tmp_path / "killed")
    assert not jobs.finished(tmp_path / "no_checkpoint")
    assert not jobs.finished(tmp_path / "never_started")


def test_failed_runs_are_named_counted_in_the_exit_code_and_kept_out_of_the_outputs(jobs, tmp_path, capsys):
    results = jobs.run_jobs([(1,), (2,), (3,)], lambda x: {"x": x} if x != 2 else {"x": x, "error": ["boom"]}, 2)
    assert [r["x"] for r in results] == [1, 2, 3]  # the jobs' order, whatever finished first
    code = jobs.report(results, lambda ok: f"table of {len(ok)}", lambda r: f"x={r['x']}",
                       json_path=tmp_path / "runs.json", markdown_path=tmp_path / "table.md")
    assert code == 1
    assert "FAILED x=2: ['boom']" in capsys.readouterr().out
    assert json.loads((tmp_path / "runs.json").read_text()) == [{"x": 1}, {"x": 3}]
    assert (tmp_path / "table.md").read_text() == "table of 2\n"
    assert jobs.report(results[:1], lambda ok: "t", str, json_path=None, markdown_path=None) == 0


def test_a_failed_training_run_returns_its_one_line_error(jobs, tmp_path):
    error = jobs.train("recipes/does_not_exist.toml", tmp_path / "run", 0, [])
    assert error is not None and len(error) == 1 and "does_not_exist.toml" in error[0]


def test_a_run_cut_short_is_started_over_and_a_finished_one_is_never_touched(jobs, tmp_path):
    recipe = "recipes/pendulum_shac.toml"
    sets = ["run.iterations=1", "run.eval_every=0", "run.checkpoint_every=1", "env.num_envs=2"]
    killed = tmp_path / "killed"
    write_run(killed, "")  # what a study killed mid-run leaves: `mbmix-fw run` refuses such a folder
    assert jobs.train(recipe, killed, 0, sets) is None
    assert jobs.finished(killed)
    done = tmp_path / "done"
    write_run(done, "12.5")
    error = jobs.train(recipe, done, 0, sets)  # a finished run is the study's to reuse, never overwritten
    assert error is not None and "already holds a run" in error[0]
    assert (done / "checkpoints" / "last.pt").read_bytes() == b"x"
