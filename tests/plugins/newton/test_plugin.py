"""The ``newton`` plugin as users meet it without the ``[newton]`` extra: its kinds still register (recipes
validate), ``mbmix-fw plugins`` lists them as needing the extra without importing newton or warp, and only a
run that builds a Newton env stops, with the one-line install hint (exit 2), writing nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

WITHOUT_NEWTON = """
import contextlib, io, json, sys
sys.modules["newton"] = None  # what an environment without the [newton] extra looks like to importlib
from mbmix_fw.commands.cli import main
with contextlib.redirect_stdout(io.StringIO()) as listing:
    listed = main(["plugins", "--json"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("warp", "newton") and sys.modules[m] is not None)
run = main(["run", "recipes/cartpole_newton_shac.toml", "--out", sys.argv[1], "--no-progress"])
hopper = main(["run", "recipes/hopper_newton_shac.toml", "--out", sys.argv[1], "--no-progress"])
valid = main(["validate", "recipes/ant_newton_shac.toml", "recipes/hopper_newton_mbmix_gpu.toml"])
rows = [r for r in json.loads(listing.getvalue()) if r["plugin"] == "newton"]
print(json.dumps({"plugins": listed, "run": run, "hopper": hopper, "validate": valid, "heavy": heavy, "rows": rows}))
"""


def test_without_newton_a_newton_recipe_stops_with_the_install_hint(tmp_path):
    out = tmp_path / "cartpole"
    done = subprocess.run([sys.executable, "-c", WITHOUT_NEWTON, str(out)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["plugins"] == 0 and result["run"] == 2 and result["hopper"] == 2 and result["validate"] == 0
    assert result["heavy"] == []  # listing the plugins imported neither newton nor warp
    assert {r["kind"] for r in result["rows"]} == {"newton_cartpole", "newton_ant", "newton_hopper",
                                                 "newton_humanoid"}
    assert all(r["status"] == "needs_extra" for r in result["rows"]), result["rows"]
    errors = [line for line in done.stderr.splitlines() if line.startswith("mbmix-fw: error:")]
    assert len(errors) == 2, done.stderr  # one line per refused run
    assert "env 'newton_cartpole' needs 'newton'" in errors[0] and "pip install 'mbmix-fw[newton]'" in errors[0]
    assert "env 'newton_hopper' needs 'newton'" in errors[1] and "pip install 'mbmix-fw[newton]'" in errors[1]
    assert "warning" not in done.stderr.lower(), done.stderr
    assert not out.exists()
