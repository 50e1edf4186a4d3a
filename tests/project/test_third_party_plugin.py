"""Third-party plugins travel the whole road: pip install → ``mbmix-fw plugins`` → a recipe runs with them.

Installs ``examples/mbmix-example-plugin`` (an env), ``examples/mbmix-example-estimator`` (an estimator) and
``examples/mbmix-example-scheduler`` (a scheduler) with ``pip install --target`` into a folder of this module's
own, which the processes it starts find on their ``PYTHONPATH`` (entry points are read from every ``sys.path``
entry). Not into the running environment: the suite runs two workers, and a process the other worker starts
meanwhile (one that asserts a run prints no warning) saw the half-installed plugins and warned that their
modules could not be imported.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "mbmix-example-plugin"
DIST = "mbmix-example-plugin"
ESTIMATOR_EXAMPLE = REPO / "examples" / "mbmix-example-estimator"
ESTIMATOR_DIST = "mbmix-example-estimator"
SCHEDULER_EXAMPLE = REPO / "examples" / "mbmix-example-scheduler"
SCHEDULER_DIST = "mbmix-example-scheduler"

pytestmark = pytest.mark.slow


_installed: list[Path] = []  # the --target folder, once installed_example has run


def _run(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBMIX_FW_")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, _installed), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    install = _run("-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target),
                   str(EXAMPLE), str(ESTIMATOR_EXAMPLE), str(SCHEDULER_EXAMPLE))
    assert install.returncode == 0, install.stderr
    _installed.append(target)
    yield
    _installed.remove(target)


def test_installed_plugin_is_listed(installed_example):
    proc = _run("-m", "mbmix_fw", "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [r for r in json.loads(proc.stdout) if r["plugin"] == DIST]
    assert rows == [{"extension_point": "env", "kind": "double_integrator", "plugin": DIST,
                     "distribution": DIST, "status": "ok", "error": None}]
    rows = [r for r in json.loads(proc.stdout) if r["plugin"] == ESTIMATOR_DIST]
    assert rows == [{"extension_point": "estimator", "kind": "uniform_mix", "plugin": ESTIMATOR_DIST,
                     "distribution": ESTIMATOR_DIST, "status": "ok", "error": None}]


def test_recipe_runs_with_the_plugin_env_and_builtin_shac(installed_example, tmp_path):
    recipe = tmp_path / "cart.toml"
    recipe.write_text(
        '[run]\ndevice = "cpu"\neval_envs = 2\n\n[env]\nkind = "double_integrator"\nnum_envs = 4\n'
        'episode_length = 16\n\n[estimator]\nkind = "shac"\nhorizon = 8\n\n[policy]\nhidden = [16]\n\n'
        '[critic]\nhidden = [16]\niterations = 2\n')
    proc = _run("-m", "mbmix_fw", "run", str(recipe), "--set", "run.iterations=2", "--no-progress",
                "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with (tmp_path / "run" / "metrics.csv").open() as handle:
        assert [int(row["iteration"]) for row in csv.DictReader(handle)] == [0, 1, 2]  # row 0: the initial evaluation
    plugins = {p["name"]: p for p in json.loads((tmp_path / "run" / "plugins.json").read_text())}
    assert plugins[DIST] | {"kinds": None} == {"name": DIST, "distribution": DIST, "version": "0.1.0",
                                               "kinds": None, "provides": ["env"]}


def test_the_example_packages_own_tests_pass(installed_example):
    proc = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests"), cwd=EXAMPLE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_recipe_runs_with_both_third_party_plugins(installed_example, tmp_path):
    recipe = tmp_path / "cart_uniform.toml"
    recipe.write_text(
        '[run]\ndevice = "cpu"\neval_envs = 2\n\n[env]\nkind = "double_integrator"\nnum_envs = 4\n'
        'episode_length = 16\n\n[estimator]\nkind = "uniform_mix"\nhorizon = 8\n\n[policy]\nhidden = [16]\n\n'
        '[critic]\nhidden = [16]\niterations = 2\n')
    proc = _run("-m", "mbmix_fw", "run", str(recipe), "--set", "run.iterations=2", "--no-progress",
                "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert resolved["estimator"] == {"kind": "uniform_mix", "horizon": 8, "gamma": 0.99}
    with (tmp_path / "run" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["iteration"]) for row in rows] == [0, 1, 2]
    assert all(row["estimator/objective"] for row in rows[1:])  # the plugin's own metric reached the log


def test_the_estimator_example_packages_own_tests_pass(installed_example):
    proc = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(ESTIMATOR_EXAMPLE / "tests"),
                cwd=ESTIMATOR_EXAMPLE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_recipe_runs_with_the_third_party_scheduler(installed_example, tmp_path):
    recipe = tmp_path / "cart_backoff.toml"
    recipe.write_text(
        '[run]\ndevice = "cpu"\neval_envs = 2\n\n[env]\nkind = "double_integrator"\nnum_envs = 4\n'
        'episode_length = 16\n\n[estimator]\nkind = "shac"\nhorizon = 8\n\n[scheduler]\nkind = "backoff_horizon"\n'
        'min_horizon = 2\nmax_horizon = 6\n\n[policy]\nhidden = [16]\n\n[critic]\nhidden = [16]\niterations = 2\n')
    proc = _run("-m", "mbmix_fw", "run", str(recipe), "--set", "run.iterations=3", "--no-progress",
                "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with (tmp_path / "run" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[1]["plan/horizon"]) == 6.0  # the scheduler's first window, not the estimator's 8
    assert all(2 <= float(row["plan/horizon"]) <= 6 for row in rows[1:])


def test_the_scheduler_example_packages_own_tests_pass(installed_example):
    proc = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(SCHEDULER_EXAMPLE / "tests"),
                cwd=SCHEDULER_EXAMPLE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
