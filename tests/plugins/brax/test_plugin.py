"""The ``brax`` env plugin without JAX: config validation, registration, lazy imports, missing extra."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

import mbmix_fw as mb
import mbmix_brax
from mbmix_brax import BRAX_BACKENDS, BRAX_ENV_NAMES, BraxConfig

REPO = Path(__file__).resolve().parents[3]
BRAX_RECIPES = sorted(REPO.glob("recipes/ant_*.toml")) + sorted(REPO.glob("recipes/hopper_*.toml")) + \
    sorted(REPO.glob("recipes/reacher_*.toml"))


def test_static_env_names_match_the_installed_brax():
    if importlib.util.find_spec("brax") is None:
        pytest.fail("the test extra installs brax; the static list must be checked against it")
    import brax.envs  # the only brax import of this file: the names must not drift

    assert set(BRAX_ENV_NAMES) == set(brax.envs._envs)


def test_unknown_env_name_and_backend_list_the_valid_ones():
    with pytest.raises(ValidationError) as err:
        BraxConfig(name="antt")
    assert "'ant'" in str(err.value) and "'reacher'" in str(err.value)
    with pytest.raises(ValidationError) as err:
        BraxConfig(backend="mjx")
    assert all(f"'{b}'" in str(err.value) for b in BRAX_BACKENDS)
    with pytest.raises(ValidationError) as err:
        BraxConfig(bridge_backward="store")
    assert "'recompute'" in str(err.value) and "'residuals'" in str(err.value)


def test_env_kwargs_accept_plain_values_and_turn_lists_into_tuples():
    config = BraxConfig(env_kwargs={"healthy_z_range": [0.3, 1.0], "ctrl_cost_weight": 0.1})
    assert config.brax_kwargs() == {"healthy_z_range": (0.3, 1.0), "ctrl_cost_weight": 0.1}
    with pytest.raises(ValidationError):
        BraxConfig(env_kwargs={"x": {"nested": 1}})


def test_bad_recipe_names_the_field_and_exits_2(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[env]\nkind = "brax"\nname = "antt"\n[estimator]\nkind = "shac"\n')
    done = subprocess.run([sys.executable, "-m", "mbmix_fw", "validate", str(recipe)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "env.name" in done.stderr and "'hopper'" in done.stderr and not list(tmp_path.glob("runs"))


def test_registering_and_validating_brax_recipes_import_no_jax():
    assert BRAX_RECIPES, "the brax recipes are missing"
    code = (
        "import sys, json\n"
        "from mbmix_fw.commands.cli import main\n"
        f"rc = main(['validate', *{[str(p) for p in BRAX_RECIPES]!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'brax', 'torch'))\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"rc": 0, "heavy": []}


def test_missing_extra_keeps_the_kind_and_building_it_gives_the_install_hint(monkeypatch):
    """Without jax the plugin is not broken: ``brax`` recipes validate, the kind is listed as needing its
    extra, and only building it fails, with the pip command (tests/project/test_quiet_first_run.py runs the CLI)."""
    import mbmix_toy

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    registry = mb.make_registry(mbmix_toy, mbmix_brax)
    assert registry.failures == [] and "brax" in registry.env and "pendulum" in registry.env
    hint = "env 'brax' needs 'jax', which is not installed: pip install 'mbmix-fw[brax]'"
    assert registry.env.get("brax").missing_dependency() == hint
    assert registry.env.get("pendulum").missing_dependency() is None
    with pytest.raises(mb.MissingDependency) as info:
        registry.env.build(BraxConfig(name="reacher"), mb.BuildContext.cpu())
    assert str(info.value) == f"plugin 'mbmix_brax': {hint}"
    monkeypatch.undo()
    assert registry.env.get("brax").missing_dependency() is None  # jax is installed here


def test_env_kwargs_are_checked_against_the_brax_constructor():
    from mbmix_brax.env import make_brax_env

    with pytest.raises(mb.UserError, match=r"env\.env_kwargs\.ctrl_cost: .*ctrl_cost_weight"):
        make_brax_env(BraxConfig(name="ant", env_kwargs={"ctrl_cost": 0.1}))
    with pytest.raises(mb.UserError, match=r"env\.env_kwargs\.backend"):
        make_brax_env(BraxConfig(name="reacher", env_kwargs={"backend": "spring"}))


WITHOUT_WARP = "import sys; sys.modules['warp'] = None  # 'import warp' now fails, as without warp-lang\n"


def test_building_a_brax_env_prints_nothing_of_brax_s_own_notices():
    build = WITHOUT_WARP + (
        "from mbmix_brax import BraxConfig\n"
        "from mbmix_brax.env import make_brax_env\n"
        "make_brax_env(BraxConfig(name='inverted_pendulum'))\n")
    bare = WITHOUT_WARP + "import warnings; warnings.simplefilter('always')\nimport brax.envs\n" \
        "brax.envs.get_environment('inverted_pendulum')\n"
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
            for code in (bare, build)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    bare_run, built = runs
    # without the plugin's filter, brax prints both (if a new brax stops, this test needs updating)
    assert "Failed to import warp" in bare_run.stdout and "not actively being maintained" in bare_run.stderr
    assert built.stdout == "" and "not actively being maintained" not in built.stderr, built.stdout + built.stderr
