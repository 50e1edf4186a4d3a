"""Recipe validation: the error catalogue (research/plugin-architecture.md C8, E1–E6 and the rest) as exact
lines, overrides, defaults, round trips, and fuzzed bad recipes."""
from __future__ import annotations

import itertools
import textwrap
import types
from pathlib import Path
from typing import Literal

import mbmix_schedulers
import pytest
from pydantic import Field

import mbmix_fw as mb
from mbmix_fw.building.recipe import DEFAULT_SCHEDULER, apply_overrides, parse_override

REPO = Path(__file__).resolve().parents[3]


class LinearConfig(mb.EnvConfig):
    kind: Literal["linear"] = "linear"
    num_envs: int = Field(8, ge=1)
    state_dim: int = Field(3, ge=1)


class TotalRewardConfig(mb.EstimatorConfig):
    kind: Literal["total_reward"] = "total_reward"
    horizon: int = Field(8, ge=1)
    gamma: float = Field(0.99, gt=0.0, le=1.0)


class TinyModelConfig(mb.WorldModelConfig):
    kind: Literal["tiny_model"] = "tiny_model"
    hidden: list[int] = Field(default_factory=lambda: [16])


def plugin(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, function in hooks.items():
        setattr(module, hook, mb.hookimpl(function))
    return module


def never_built(config, ctx):
    raise AssertionError("validation must not build components")


TEST_PLUGIN = plugin(
    "test_plugin",
    register_envs=lambda register: register(LinearConfig, never_built),
    register_estimators=lambda register: register(TotalRewardConfig, never_built),
    register_world_models=lambda register: register(TinyModelConfig, never_built),
)


@pytest.fixture
def registry():
    return mb.make_registry(TEST_PLUGIN, mbmix_schedulers)


GOOD = """
[run]
seed = 3
iterations = 5

[env]
kind = "linear"
num_envs = 4

[estimator]
kind = "total_reward"
horizon = 4
"""


def write(tmp_path: Path, text: str, name: str = "x.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path, registry, overrides=()) -> list[str]:
    with pytest.raises(mb.RecipeError) as info:
        mb.load_recipe(path, registry, overrides)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def test_good_recipe_with_defaults(tmp_path, registry):
    recipe = mb.load_recipe(write(tmp_path, GOOD), registry)
    assert recipe.run == mb.RunSettings(seed=3, iterations=5)
    assert recipe.env == LinearConfig(num_envs=4)
    assert recipe.estimator == TotalRewardConfig(horizon=4)
    assert recipe.world_model is None  # absent: model-free
    assert recipe.scheduler == mbmix_schedulers.ModelFreeConfig()  # absent: DEFAULT_SCHEDULER
    assert DEFAULT_SCHEDULER == {"kind": "model_free"}
    assert recipe.policy == mb.PolicySettings() and recipe.optim == mb.OptimSettings()


# ---- the catalogue: (recipe edit, overrides, expected lines with {p} = the file) ----
CATALOGUE = {
    "E1 unknown kind": ('[env]\nkind = "lineer"\n[estimator]\nkind = "total_reward"\n', (),
                        ["{p}: env.kind: unknown env kind 'lineer' (did you mean 'linear'?); available: linear"]),
    "E1 unknown kind without a close match": (
        '[env]\nkind = "linear"\n[estimator]\nkind = "ppo"\n', (),
        ["{p}: estimator.kind: unknown estimator kind 'ppo'; available: total_reward"]),
    "E2 kind missing": ('[env]\nnum_envs = 2\n[estimator]\nkind = "total_reward"\n', (),
                        ["{p}: env.kind: missing; set kind to one of: linear"]),
    "kind not a string": ('[env]\nkind = 3\n[estimator]\nkind = "total_reward"\n', (),
                          ["{p}: env.kind: kind must be a string, got integer"]),
    "E4 out of range": (GOOD.replace("num_envs = 4", "num_envs = 0"), (),
                        ["{p}: env.num_envs: Input should be greater than or equal to 1, got 0"]),
    "E4 out of range (upper)": (GOOD, ("estimator.gamma=1.5",),
                                ["--set estimator.gamma=1.5: estimator.gamma: Input should be less than or equal to 1, got 1.5"]),
    "wrong type": (GOOD.replace("num_envs = 4", 'num_envs = "four"'), (),
                   ["{p}: env.num_envs: expected an integer, got string \"four\""]),
    "wrong type in a core table": (GOOD.replace("seed = 3", "seed = [3]"), (),
                                   ["{p}: run.seed: expected an integer, got array [3]"]),
    "table given as a value": ('env = 3\n[estimator]\nkind = "total_reward"\n', (),
                               ["{p}: env: expected a table [env], got integer"]),
    "E5 unknown plugin field": (GOOD.replace("num_envs = 4", "num_env = 4"), (),
                                ["{p}: env.num_env: unknown field (did you mean 'num_envs'?)"]),
    "E5 unknown run field": (GOOD.replace("seed = 3", "sede = 3"), (),
                             ["{p}: run.sede: unknown field (did you mean 'seed'?)"]),
    "E5 unknown table": (GOOD + "[polcy]\nhidden = [8]\n", (),
                         ["{p}: polcy: unknown field (did you mean 'policy'?)"]),
    "E5 unknown field, no close match": (GOOD.replace("num_envs = 4", "zzz = 4"), (),
                                         ["{p}: env.zzz: unknown field; expected one of: episode_length, kind, num_envs, state_dim"]),
    "E5 unknown field in a core table": (GOOD + "[policy]\nhiden = [8]\n", (),
                                         ["{p}: policy.hiden: unknown field (did you mean 'hidden'?)"]),
    "E6 TOML syntax": ("[run\nseed = 1\n", (),
                       ["{p}: Expected ']' at the end of a table declaration (at line 1, column 5)"]),
    "missing required table": ('[env]\nkind = "linear"\n', (),
                               ["{p}: estimator: missing required table [estimator]; add it with kind = one of: "
                                "total_reward"]),
    "missing both required tables": ("[run]\nseed = 1\n", (), [
        "{p}: env: missing required table [env]; add it with kind = one of: linear",
        "{p}: estimator: missing required table [estimator]; add it with kind = one of: total_reward"]),
    "every problem, one line each": (
        GOOD.replace("num_envs = 4", "num_envs = -1\nnum_env = 2").replace("horizon = 4", "horizon = 0"), (), [
            "{p}: env.num_envs: Input should be greater than or equal to 1, got -1",
            "{p}: env.num_env: unknown field (did you mean 'num_envs'?)",
            "{p}: estimator.horizon: Input should be greater than or equal to 1, got 0"]),
    "unknown kind by --set": (GOOD, ("env.kind=lineer",),
                              ["--set env.kind=lineer: env.kind: unknown env kind 'lineer' (did you mean "
                               "'linear'?); available: linear"]),
    "bad value by --set": (GOOD, ("estimator.horizon=0",),
                           ["--set estimator.horizon=0: estimator.horizon: Input should be greater than or equal to 1, got 0"]),
    "unknown scheduler": (GOOD + '[scheduler]\nkind = "dina"\n', (),
                          ["{p}: scheduler.kind: unknown scheduler kind 'dina' (did you mean 'dyna'?); "
                           "available: agree, ahac, dyna, model_free"]),
    "unknown world-model field": (GOOD + '[world_model]\nkind = "tiny_model"\nhiden = [4]\n', (),
                                  ["{p}: world_model.hiden: unknown field (did you mean 'hidden'?)"]),
    "malformed --set": (GOOD, ("estimator.horizon",),
                        ["--set estimator.horizon: expected section.key=value, e.g. --set estimator.lam=0.95"]),
    "--set through a value": (GOOD, ("run.seed.x=1",), ["--set run.seed.x: 'run.seed' is not a table"]),
}


@pytest.mark.parametrize("case", list(CATALOGUE))
def test_error_catalogue(tmp_path, registry, case):
    text, overrides, expected = CATALOGUE[case]
    path = write(tmp_path, text)
    assert problems(path, registry, overrides) == [line.format(p=path) for line in expected]


def test_e1b_unknown_kind_mentions_plugins_that_failed(tmp_path, registry):
    broken = plugin("mbmix_typo", register_env=lambda register: None)
    registry = mb.make_registry(TEST_PLUGIN, mbmix_schedulers, broken)
    path = write(tmp_path, GOOD.replace('"linear"', '"pendulum"'))
    assert problems(path, registry) == [
        f"{path}: env.kind: unknown env kind 'pendulum'; available: linear; note: 1 plugin failed to load "
        f"(mbmix_typo); run 'mbmix-fw plugins'"]


def test_e3_kind_claimed_by_two_plugins(tmp_path):
    twin = plugin("plugin_b", register_envs=lambda register: register(LinearConfig, never_built))
    registry = mb.make_registry(TEST_PLUGIN, twin, mbmix_schedulers)
    path = write(tmp_path, GOOD)
    assert problems(path, registry) == [
        f"{path}: env.kind: 'linear' is registered by 2 plugins: test_plugin, plugin_b; "
        f"disable one with MBMIX_FW_DISABLE_PLUGINS=plugin_b"]


def test_missing_file_and_directory(tmp_path, registry):
    missing = tmp_path / "nope.toml"
    assert problems(missing, registry) == [f"{missing}: no such file"]
    assert problems(tmp_path, registry) == [f"{tmp_path}: is a directory, expected a .toml recipe"]


@pytest.mark.parametrize("text, expected", [
    ("estimator.gamma=0.9", ("estimator.gamma", 0.9)),
    ("estimator.horizon=16", ("estimator.horizon", 16)),
    ("policy.hidden=[32, 32]", ("policy.hidden", [32, 32])),
    ("policy.layer_norm=false", ("policy.layer_norm", False)),
    ("run.out=runs/a b", ("run.out", "runs/a b")),
    ("run.device=cpu", ("run.device", "cpu")),
    ('env.kind="linear"', ("env.kind", "linear")),
    ("run.out = runs/x=1", ("run.out", "runs/x=1")),
])
def test_override_values_are_read_as_toml_when_possible(text, expected):
    assert parse_override(text) == expected


def test_overrides_create_tables_and_leave_the_input_untouched(tmp_path, registry):
    data = {"env": {"kind": "linear"}}
    updated = apply_overrides(data, ["world_model.kind=tiny_model", ("world_model.hidden", [4, 4])])
    assert data == {"env": {"kind": "linear"}}
    assert updated["world_model"] == {"kind": "tiny_model", "hidden": [4, 4]}
    recipe = mb.load_recipe(write(tmp_path, GOOD), registry,
                            ["world_model.kind=tiny_model", "estimator.horizon=2", "run.out=runs/o"])
    assert recipe.world_model == TinyModelConfig() and recipe.estimator.horizon == 2
    assert recipe.run.out == "runs/o"


def test_json_dump_round_trips_with_every_plugin_field(tmp_path, registry):
    recipe = mb.load_recipe(write(tmp_path, GOOD + '[world_model]\nkind = "tiny_model"\n'), registry)
    dumped = recipe.model_dump(mode="json")
    assert dumped["env"] == {"kind": "linear", "num_envs": 4, "episode_length": 200, "state_dim": 3}  # all kept
    assert dumped["scheduler"] == {"kind": "model_free"} and dumped["optim"]["lr_schedule"] == "linear"
    again = mb.validate_recipe(dumped, registry, "recipe.json")
    assert again == recipe and type(again.env) is LinearConfig


def test_programmatic_recipe_needs_no_registry_and_round_trips(registry):
    recipe = mb.Recipe(env=LinearConfig(num_envs=2), estimator=TotalRewardConfig(),
                       scheduler=mbmix_schedulers.ModelFreeConfig(), optim=mb.OptimSettings(lr_schedule="constant"))
    assert recipe.env.num_envs == 2 and recipe.world_model is None
    assert mb.validate_recipe(recipe.model_dump(mode="json"), registry) == recipe


def test_programmatic_recipe_gets_the_default_scheduler_from_installed_plugins():
    recipe = mb.Recipe(env=LinearConfig(), estimator=TotalRewardConfig())
    assert recipe.scheduler.kind == "model_free"


def test_recipe_is_frozen(tmp_path, registry):
    recipe = mb.load_recipe(write(tmp_path, GOOD), registry)
    with pytest.raises(Exception):
        recipe.run = mb.RunSettings()  # type: ignore[misc]


# ---- fuzz: many bad recipes, each one line per problem naming file and field ----
def _mutations() -> list[tuple[str, str, object]]:
    bad_values = {"a string": "not a number", "negative": -7, "list": [1, 2], "table": {"x": 1}}
    fields = [("run", "seed"), ("run", "iterations"), ("run", "checkpoint_every"), ("run", "eval_envs"),
              ("env", "num_envs"), ("env", "state_dim"), ("estimator", "horizon"), ("estimator", "gamma"),
              ("critic", "lam"), ("critic", "tau"), ("optim", "actor_lr"), ("optim", "grad_clip"),
              ("policy", "init_log_std"), ("critic", "minibatches")]
    cases = []
    for (table, field), (label, value) in itertools.product(fields, bad_values.items()):
        if label == "negative" and (table, field) in {("run", "seed"), ("policy", "init_log_std")}:
            continue  # negative values are valid there
        cases.append((f"{table}.{field}", label, value))
    for table in ("run", "env", "estimator", "policy", "critic", "optim", "scheduler"):
        cases.append((f"{table}.bogus_key", "unknown key", 1))
    cases.append(("run.device", "unknown device", "tpu"))
    cases.append(("env.kind", "unknown kind", "nope"))
    cases.append(("estimator.kind", "wrong kind type", 1.5))
    return cases


MUTATIONS = _mutations()


def test_fuzz_has_at_least_fifty_cases():
    assert len(MUTATIONS) >= 50


@pytest.mark.parametrize("key, label, value", MUTATIONS, ids=[f"{k}-{lab}" for k, lab, _ in MUTATIONS])
def test_fuzzed_bad_recipes_fail_with_one_line_per_problem(tmp_path, registry, key, label, value):
    path = write(tmp_path, GOOD)
    lines = problems(path, registry, [(key, value)])
    assert lines and all(line.startswith(f"{path}: {key.split('.')[0]}") for line in lines), lines
    assert all("\n" not in line for line in lines)


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates_against_the_installed_plugins(path, caplog):
    """... and uses today's keys: a shipped recipe that needs a moved key carried over would print a
    deprecation line at every run of it (``building/moved_keys.py``)."""
    with caplog.at_level("WARNING", logger="mbmix_fw"):
        mb.load_recipe(path, mb.load_registry())
    assert not [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]


def test_toml_arrays_validate_where_a_list_of_tuples_is_expected():
    """TOML and recipe.json write tuples as arrays: a ``list[tuple[int, int]]`` field (the cloth's gripper
    pairs) accepts ``[[0, 0], [0, -1]]`` under strict validation, and still rejects a wrong-length pair."""

    class Pairs(mb.StrictTable):
        pairs: list[tuple[int, int]] = Field(default_factory=list)

    assert Pairs.model_validate({"pairs": [[0, 0], [0, -1]]}).pairs == [(0, 0), (0, -1)]
    with pytest.raises(Exception, match="pairs.0"):
        Pairs.model_validate({"pairs": [[0, 0, 1]]})


@pytest.mark.parametrize("method", ["shac", "mix", "bptt", "mbmix"])
def test_the_hopper_recipes_are_the_ant_recipes_but_for_the_body_as_their_headers_say(method):
    """No include mechanism on purpose (a recipe is read alone): the hopper recipes copy the ant's settings,
    and say so. When one is tuned for hopper, its header and this list change together."""
    import tomllib

    hopper_text = (REPO / "recipes" / f"hopper_{method}.toml").read_text()
    ant, hopper = (tomllib.loads(text) for text in ((REPO / "recipes" / f"ant_{method}.toml").read_text(), hopper_text))
    assert (ant["env"].pop("name"), hopper["env"].pop("name")) == ("ant", "hopper")
    assert hopper == ant
    assert f"# Every setting but env.name is recipes/ant_{method}.toml's, on purpose" in hopper_text
