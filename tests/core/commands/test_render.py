"""``mbmix-fw render``: a cloth run drawn before and after training, and the refusals (an env that cannot
draw, a folder that is no run)."""
from __future__ import annotations

from pathlib import Path

import pytest

from mbmix_fw.commands.cli import main

ROOT = Path(__file__).resolve().parents[3]

pytest.importorskip("warp", reason="the [warp] extra is installed in CI (README test command)")


def test_render_draws_the_initial_and_the_trained_policy(tmp_path, capsys):
    run = tmp_path / "cloth"
    assert main(["run", str(ROOT / "recipes" / "cloth_mix.toml"), "--out", str(run), "--no-progress",
                 "--set", "run.iterations=1", "--set", "run.eval_envs=2", "--set", "env.num_envs=2",
                 "--set", "env.grid_size=4", "--set", "estimator.horizon=4", "--set", "env.episode_length=6",
                 "--set", "scheduler.warmup_iterations=0"]) == 0
    assert main(["render", str(run), "--frames", "3"]) == 0
    png = run / "render.png"
    assert png.stat().st_size > 20_000 and f"wrote {png}" in capsys.readouterr().out
    other = tmp_path / "elsewhere.png"
    assert main(["render", str(run), "--out", str(other)]) == 0 and other.exists()


def test_render_refuses_an_env_that_cannot_draw(tmp_path, capsys):
    run = tmp_path / "pendulum"
    assert main(["run", str(ROOT / "recipes" / "pendulum_mix.toml"), "--out", str(run), "--no-progress",
                 "--set", "run.iterations=1", "--set", "run.eval_envs=2", "--set", "env.num_envs=2"]) == 0
    capsys.readouterr()
    assert main(["render", str(run)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "env 'pendulum' cannot draw itself" in lines[0], lines
    assert not (run / "render.png").exists()


def test_render_of_a_folder_that_is_no_run(tmp_path, capsys):
    assert main(["render", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
