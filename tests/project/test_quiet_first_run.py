"""README's first command on a machine without jax (``pip install -e '.[warp]'``, then ``mbmix-fw run
recipes/cloth_mix.toml`` on a CPU) prints no warning: the ``brax`` plugin whose extra is missing is not a
broken plugin, and warp's "no CUDA driver" line is not shown on a CPU run.

Each command runs in a subprocess whose ``sitecustomize`` hides jax, jaxlib and brax (``sys.modules[name] =
None``: importing them fails and ``importlib.util.find_spec`` says they are not installed, as on a machine
without the ``[brax]`` extra)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HINT = "env 'brax' needs 'jax', which is not installed: pip install 'mbmix-fw[brax]'"


@pytest.fixture(scope="module")
def without_jax(tmp_path_factory) -> dict[str, str]:
    blocker = tmp_path_factory.mktemp("without_jax")
    (blocker / "sitecustomize.py").write_text(
        "import sys\nsys.modules.update(dict.fromkeys(('jax', 'jaxlib', 'brax'), None))\n")
    path = os.pathsep.join([str(blocker), str(REPO), str(REPO / "plugins"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MBMIX_FW_DEBUG": ""}


def mbmix(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbmix_fw", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def test_the_blocker_hides_jax(without_jax, tmp_path):
    done = subprocess.run([sys.executable, "-c", "import importlib.util; print(importlib.util.find_spec('jax'))"],
                          capture_output=True, text=True, env=without_jax, cwd=tmp_path, timeout=60)
    assert done.stdout.strip() == "None", done.stderr


def test_a_cpu_cloth_run_without_jax_prints_no_warning(without_jax, tmp_path):
    done = mbmix(without_jax, "run", str(REPO / "recipes" / "cloth_mix.toml"), "--out", str(tmp_path / "run"),
                 "--device", "cpu", "--set", "run.iterations=1", "--set", "run.eval_every=1",
                 "--set", "run.eval_envs=2", "--set", "env.num_envs=2", "--set", "env.episode_length=16",
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("run finished:"), done.stdout
    everything = done.stdout + done.stderr
    assert "warning" not in everything.lower() and "brax" not in everything, everything
    assert "CUDA" not in everything, everything  # warp's "Could not find or load the NVIDIA CUDA driver"
    assert [line for line in done.stderr.splitlines() if not line.startswith("train:")] == [], done.stderr


def test_plugins_lists_brax_as_needing_its_extra(without_jax, tmp_path):
    listed = mbmix(without_jax, "plugins", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    assert "broken:" not in listed.stdout
    brax_line = next(line for line in listed.stdout.splitlines() if line.strip().startswith("brax ") and "from" in line)
    assert brax_line.endswith("needs its extra: pip install 'mbmix-fw[brax]'"), listed.stdout
    rows = json.loads(mbmix(without_jax, "plugins", "--json", cwd=tmp_path).stdout)
    brax = [row for row in rows if row["plugin"] == "brax"]
    assert brax == [{"extension_point": "env", "kind": "brax", "plugin": "brax", "distribution": "mbmix-fw",
                     "status": "needs_extra", "error": HINT}]
    assert all(row["status"] == "ok" for row in rows if row["plugin"] != "brax")


def test_only_a_brax_recipe_gets_the_install_hint(without_jax, tmp_path):
    recipe = REPO / "recipes" / "reacher_shac.toml"
    checked = mbmix(without_jax, "validate", str(recipe), cwd=tmp_path)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr  # the config itself is valid
    done = mbmix(without_jax, "run", str(recipe), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"mbmix-fw: error: plugin 'brax' (mbmix-fw 0.1.0): {HINT}"], done.stderr
    assert not (tmp_path / "run").exists()  # nothing written


def test_warp_s_native_line_is_dropped_and_others_kept(tmp_path):
    """The filter around ``wp.init`` on a CPU run: C code's stderr lines pass, except warp's driver line."""
    code = (
        "import os, sys\n"
        "from mbmix_warp.bridge import NO_CUDA_DRIVER, _native_stderr_without\n"
        "with _native_stderr_without(NO_CUDA_DRIVER):\n"
        "    os.write(2, b'before\\n' + NO_CUDA_DRIVER.encode() + b'. GPU execution will not be available.\\n')\n"
        "    os.write(2, b'after\\n')\n"
        "print('done', file=sys.stderr)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stderr == "before\nafter\ndone\n", done.stderr
