"""The ``warp`` plugin as users meet it: registration without warp, the install hint when warp is missing
(other recipes still run), and bad cloth settings (``mbmix-fw render``: tests/core/commands/test_render.py)."""
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
