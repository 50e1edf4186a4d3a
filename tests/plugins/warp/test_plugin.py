"""The ``warp`` plugin as users meet it: registration without warp, the install hint when warp is missing
(other recipes still run), and ``mbmix-fw render`` on a cloth run (and its refusal on an env that cannot
draw)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mbmix_fw.commands.cli import main

ROOT = Path(__file__).resolve().parents[3]

WITHOUT_WARP = """
import json, sys
sys.modules["warp"] = None  # what an environment without the [warp] extra looks like to importlib
from mbmix_fw.commands.cli import main
cloth = main(["run", "recipes/cloth_mix.toml", "--out", sys.argv[1], "--no-progress"])
valid = main(["validate", "recipes/cloth_mix.toml"])
pendulum = main(["run", "recipes/pendulum_mix.toml", "--out", sys.argv[2], "--no-progress",
                 "--set", "run.iterations=1", "--set", "run.eval_envs=2", "--set", "env.num_envs=4"])
print(json.dumps({"cloth": cloth, "validate": valid, "pendulum": pendulum,
                  "warp_imported": sys.modules.get("warp") is not None}))
"""


def test_without_warp_the_cloth_recipe_names_the_extra_and_other_recipes_run(tmp_path):
    cloth_out, pendulum_out = tmp_path / "cloth", tmp_path / "pendulum"
    done = subprocess.run([sys.executable, "-c", WITHOUT_WARP, str(cloth_out), str(pendulum_out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    codes = json.loads(done.stdout.strip().splitlines()[-1])
    assert codes == {"cloth": 2, "validate": 0, "pendulum": 0, "warp_imported": False}, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("mbmix-fw: error:")]
    assert len(errors) == 1, done.stderr
    assert "env 'cloth_fold' needs 'warp'" in errors[0] and "pip install 'mbmix-fw[warp]'" in errors[0]
    assert not cloth_out.exists()  # nothing written
    assert (pendulum_out / "checkpoints" / "last.pt").exists()


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


@pytest.mark.parametrize("override, field", [
    ("env.grid_size=2", "env.grid_size"), ("env.mass=0", "env.mass"), ("env.substeps=0", "env.substeps"),
    ("env.bend_stiffness=-1", "env.bend_stiffness"), ("env.grippers=[[0, 12]]", "env.grippers"),
    ("env.substeps=2", "env.substeps"),  # too long a substep for the stiffness
])
def test_bad_cloth_settings_exit_2_naming_the_field_and_write_nothing(override, field, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "never"
    assert main(["run", "recipes/cloth_mix.toml", "--set", override, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"--set {override}: {field}:" in lines[0], lines  # errors name the override
    assert not out.exists()
