"""Plugin loading isolation (real dist-info distributions on a temporary sys.path), the registration
rules and the error catalogue of research/plugin-architecture.md C8 (E3, E7–E13)."""
from __future__ import annotations

import importlib
import sys
import textwrap
import types
from pathlib import Path
from typing import Literal

import pytest
import torch

import mbmix_fw as mb
from mbmix_fw.building.registry import load_registry, make_registry
from mbmix_fw.testing import LinearEnv

GOOD = '''
from typing import Literal
import mbmix_fw as mb
from mbmix_fw.testing import LinearEnv


class {cls}(mb.EnvConfig):
    kind: Literal["{kind}"] = "{kind}"
    num_envs: int = 4


def make(config, ctx):
    return LinearEnv(num_envs=config.num_envs, ctx=ctx)


@mb.hookimpl
def register_envs(register):
    register({cls}, make)
'''


class Distributions:
    """Writes installed-looking distributions (``*.dist-info`` + module) into a folder on ``sys.path``."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root, self.modules = root, []
        monkeypatch.syspath_prepend(str(root))

    def add(self, dist: str, source: str, *, entry_point: str | None = None, module: str | None = None,
            version: str = "0.1.0") -> str:
        module = module or f"{dist.replace('-', '_')}_{abs(hash(self.root)) % 10**8}"
        (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[mbmix_fw]\n{entry_point or dist} = {module}\n")
        self.modules.append(module)
        importlib.invalidate_caches()
        return module

    def cleanup(self) -> None:
        for module in self.modules:
            sys.modules.pop(module, None)


@pytest.fixture
def dists(tmp_path, monkeypatch):
    d = Distributions(tmp_path, monkeypatch)
    for var in ("MBMIX_FW_PLUGINS", "MBMIX_FW_DISABLE_PLUGINS", "MBMIX_FW_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    yield d
    d.cleanup()


# ---- the failure catalogue: each broken plugin is reported, rolled back, and the good one still works ----
BROKEN = {
    "import_error": ("import gymnax_missing_for_test\n",
                     "ModuleNotFoundError: No module named 'gymnax_missing_for_test'"),
    "wrong_hook_argument": ('''
        import mbmix_fw as mb

        @mb.hookimpl
        def register_envs(registry):
            pass
        ''', "register_envs(registry) asks for 'registry'; the hook provides: register"),
    "misspelt_hook": ('''
        import mbmix_fw as mb

        @mb.hookimpl
        def register_env(register):
            pass
        ''', "unknown hook 'register_env' (did you mean 'register_envs'?)"),
    "raising_hook": ('''
        import mbmix_fw as mb

        @mb.hookimpl
        def register_estimators(register):
            raise RuntimeError("boom")
        ''', "register_estimators raised RuntimeError: boom"),
    "not_a_subclass": ('''
        from typing import Literal
        import mbmix_fw as mb

        class PendulumConfig(mb.EstimatorConfig):
            kind: Literal["pendulum"] = "pendulum"

        @mb.hookimpl
        def register_envs(register):
            register(PendulumConfig, lambda config, ctx: None)
        ''', "register_envs: PendulumConfig must subclass mbmix_fw.EnvConfig"),
    "kind_not_literal": ('''
        import mbmix_fw as mb

        class PendulumConfig(mb.EnvConfig):
            kind: str = "pendulum"

        @mb.hookimpl
        def register_envs(register):
            register(PendulumConfig, lambda config, ctx: None)
        ''', "register_envs: PendulumConfig.kind must be declared as kind: Literal['pendulum'] = 'pendulum'"),
    "kind_default_differs": ('''
        from typing import Literal
        import mbmix_fw as mb

        class CartConfig(mb.EnvConfig):
            kind: Literal["cart"] = "cart_pole"

        @mb.hookimpl
        def register_envs(register):
            register(CartConfig, lambda config, ctx: None)
        ''', "register_envs: CartConfig.kind must be declared as kind: Literal['cart'] = 'cart'"),
    "kind_not_snake_case": ('''
        from typing import Literal
        import mbmix_fw as mb

        class PendulumConfig(mb.EnvConfig):
            kind: Literal["Pendulum-v1"] = "Pendulum-v1"

        @mb.hookimpl
        def register_envs(register):
            register(PendulumConfig, lambda config, ctx: None)
        ''', "register_envs: kind 'Pendulum-v1' must be lowercase snake_case"),
    "factory_not_callable": ('''
        from typing import Literal
        import mbmix_fw as mb

        class PendulumConfig(mb.EnvConfig):
            kind: Literal["pendulum"] = "pendulum"

        @mb.hookimpl
        def register_envs(register):
            register(PendulumConfig, 3)
        ''', "register_envs: factory for env 'pendulum' must be callable, got int"),
    "half_registered": ('''
        from typing import Literal
        import mbmix_fw as mb

        class FineConfig(mb.EnvConfig):
            kind: Literal["fine_env"] = "fine_env"

        class BadConfig(mb.EnvConfig):
            kind: Literal["Bad"] = "Bad"

        @mb.hookimpl
        def register_envs(register):
            register(FineConfig, lambda config, ctx: None)   # accepted ...
            register(BadConfig, lambda config, ctx: None)    # ... then rolled back with the plugin

        @mb.hookimpl
        def on_run_end(run_dir, metrics):
            metrics["half_registered"] = True
        ''', "register_envs: kind 'Bad' must be lowercase snake_case"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_plugin_is_reported_rolled_back_and_others_still_load(dists, case):
    source, reason = BROKEN[case]
    dists.add("mbmix-good", GOOD.format(cls="GoodConfig", kind="good_env"))
    dists.add("mbmix-broken", source)

    registry = load_registry(allow=["mbmix-good", "mbmix-broken"])

    assert [f.message for f in registry.failures] == [
        f"plugin 'mbmix-broken' (mbmix-broken 0.1.0) not loaded: {reason}"]
    assert [p.name for p in registry.plugins] == ["mbmix-good"]
    assert registry.plugins[0].distribution == "mbmix-good" and registry.plugins[0].version == "0.1.0"
    assert registry.pm.get_plugin("mbmix-broken") is None  # rolled back in pluggy too
    assert registry.env.kinds() == ["good_env"]  # nothing of the broken plugin survives
    metrics: dict = {}
    registry.hooks.on_run_end(run_dir=None, metrics=metrics)
    assert metrics == {}
    env = registry.env.build(registry.env.get("good_env").config(), mb.BuildContext.cpu())
    assert isinstance(env, LinearEnv)


@pytest.mark.parametrize("case", ["import_error", "misspelt_hook", "half_registered"])
def test_strict_mode_raises_on_the_first_failure(dists, monkeypatch, case):
    dists.add("mbmix-broken", BROKEN[case][0])
    monkeypatch.setenv("MBMIX_FW_STRICT_PLUGINS", "1")
    with pytest.raises(mb.PluginError, match=r"^plugin 'mbmix-broken' \(mbmix-broken 0.1.0\) not loaded: "):
        load_registry(allow=["mbmix-broken"])


def test_entry_point_name_clash_names_both_distributions(dists):
    dists.add("mbmix-aaa", GOOD.format(cls="AConfig", kind="a_env"), entry_point="clash")
    dists.add("mbmix-bbb", GOOD.format(cls="BConfig", kind="b_env"), entry_point="clash")

    registry = load_registry(allow=["clash"])

    assert registry.env.kinds() == ["a_env"]
    assert [f.message for f in registry.failures] == [
        "plugin 'clash' (mbmix-bbb 0.1.0) not loaded: plugin name 'clash' from mbmix-bbb 0.1.0 is already "
        "used by mbmix-aaa 0.1.0; use your distribution name as the entry-point name"]


def test_two_plugins_claiming_one_kind_conflict_only_on_that_kind(dists):
    dists.add("mbmix-aaa", GOOD.format(cls="SharedConfig", kind="shared_env"))
    dists.add("mbmix-bbb", GOOD.format(cls="SharedConfig", kind="shared_env"))
    dists.add("mbmix-good", GOOD.format(cls="GoodConfig", kind="good_env"))

    registry = load_registry(allow=["mbmix-aaa", "mbmix-bbb", "mbmix-good"])

    assert not registry.failures
    assert list(registry.env.conflicts()) == ["shared_env"]
    with pytest.raises(mb.PluginError) as info:
        registry.env.get("shared_env")
    assert str(info.value) == (
        "'shared_env' is registered by 2 plugins: mbmix-aaa (mbmix-aaa 0.1.0), mbmix-bbb (mbmix-bbb 0.1.0); "
        "disable one with MBMIX_FW_DISABLE_PLUGINS=mbmix-bbb")
    assert registry.env.get("good_env").plugin.name == "mbmix-good"


def test_allow_and_disable_lists_come_from_the_environment(dists, monkeypatch):
    dists.add("mbmix-aaa", GOOD.format(cls="AConfig", kind="a_env"))
    dists.add("mbmix-bbb", GOOD.format(cls="BConfig", kind="b_env"))

    monkeypatch.setenv("MBMIX_FW_PLUGINS", "mbmix-aaa, mbmix-bbb")
    assert load_registry().env.kinds() == ["a_env", "b_env"]
    monkeypatch.setenv("MBMIX_FW_DISABLE_PLUGINS", "mbmix-aaa")
    assert load_registry().env.kinds() == ["b_env"]
    monkeypatch.setenv("MBMIX_FW_PLUGINS", "")  # set but empty: no entry-point plugin at all
    assert load_registry().plugins == []


def test_allow_list_naming_an_uninstalled_plugin_is_reported(dists, monkeypatch):
    dists.add("mbmix-aaa", GOOD.format(cls="AConfig", kind="a_env"))
    monkeypatch.setenv("MBMIX_FW_PLUGINS", "mbmix-aaa,mbmix-typo")
    registry = load_registry()
    assert registry.env.kinds() == ["a_env"]
    assert len(registry.failures) == 1
    assert registry.failures[0].message.startswith(
        "plugin 'mbmix-typo' not loaded: named in MBMIX_FW_PLUGINS but not installed (installed: ")


def test_installed_builtins_load_through_entry_points(monkeypatch):
    monkeypatch.delenv("MBMIX_FW_PLUGINS", raising=False)
    monkeypatch.delenv("MBMIX_FW_DISABLE_PLUGINS", raising=False)
    registry = load_registry(allow=["schedulers"])
    assert registry.plugins[0].distribution == "mbmix-fw"
    assert {"model_free", "dyna"} <= set(registry.scheduler.kinds())


# ---- make_registry and Slot.build, with in-memory plugin modules ----
class LinearConfig(mb.EnvConfig):
    kind: Literal["linear"] = "linear"
    num_envs: int = 4


def plugin(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, function in hooks.items():
        setattr(module, hook, mb.hookimpl(function))
    return module


def env_plugin(name: str, factory) -> types.ModuleType:
    return plugin(name, register_envs=lambda register: register(LinearConfig, factory))


def test_make_registry_registers_exactly_the_given_modules():
    registry = make_registry(env_plugin("linear_plugin", lambda config, ctx: LinearEnv(ctx=ctx)))
    assert [p.name for p in registry.plugins] == ["linear_plugin"]
    assert registry.env.kinds() == ["linear"] and registry.estimator.kinds() == []
    entry = registry.env.get("linear")
    assert entry.config is LinearConfig and entry.plugin.distribution is None


def test_unknown_kind_lookup_suggests_the_closest_and_mentions_failures():
    registry = make_registry(env_plugin("linear_plugin", LinearEnv),
                             plugin("typo_plugin", register_env=lambda register: None))
    with pytest.raises(mb.PluginError) as info:
        registry.env.get("lineer")
    assert str(info.value) == ("unknown env kind 'lineer' (did you mean 'linear'?); available: linear; "
                               "note: 1 plugin failed to load (typo_plugin); run 'mbmix-fw plugins'")


def test_build_passes_config_and_context_and_checks_the_type():
    seen = {}

    def factory(config, ctx):
        seen.update(config=config, ctx=ctx)
        return LinearEnv(num_envs=config.num_envs, ctx=ctx)

    registry = make_registry(env_plugin("linear_plugin", factory))
    ctx = mb.BuildContext(device="cpu", seed=7)
    env = registry.env.build(LinearConfig(num_envs=3), ctx)
    assert env.num_envs == 3 and seen["config"] == LinearConfig(num_envs=3) and seen["ctx"] is ctx


def test_factory_returning_the_wrong_type_names_the_plugin():  # E13
    registry = make_registry(env_plugin("linear_plugin", lambda config, ctx: (1, 2)))
    with pytest.raises(mb.PluginError) as info:
        registry.env.build(LinearConfig(), mb.BuildContext.cpu())
    assert str(info.value) == ("plugin 'linear_plugin': factory for env 'linear' returned tuple, "
                               "expected mbmix_fw.DiffEnv")


def test_missing_module_in_a_factory_becomes_missing_dependency():  # E12
    def needs_jax(config, ctx):
        import jax_missing_for_test  # noqa: F401

    registry = make_registry(env_plugin("linear_plugin", needs_jax))
    with pytest.raises(mb.MissingDependency) as info:
        registry.env.build(LinearConfig(), mb.BuildContext.cpu())
    assert str(info.value).startswith("plugin 'linear_plugin': env 'linear' needs 'jax_missing_for_test', "
                                      "which is not installed")


def test_require_in_a_factory_keeps_its_install_hint():  # E12 with the extra's pip command
    def needs_brax(config, ctx):
        mb.require("brax_missing_for_test", extra="brax")

    registry = make_registry(env_plugin("linear_plugin", needs_brax))
    with pytest.raises(mb.MissingDependency) as info:
        registry.env.build(LinearConfig(), mb.BuildContext.cpu())
    assert str(info.value) == ("plugin 'linear_plugin': env 'linear' needs 'brax_missing_for_test', "
                               "which is not installed: pip install 'mbmix-fw[brax]'")


def test_other_factory_errors_propagate_with_a_note_naming_the_plugin():
    def broken(config, ctx):
        raise ValueError("bad matrix")

    registry = make_registry(env_plugin("linear_plugin", broken))
    with pytest.raises(ValueError, match="bad matrix") as info:
        registry.env.build(LinearConfig(), mb.BuildContext.cpu())
    assert "while building env 'linear' with plugin 'linear_plugin'" in info.value.__notes__


def test_same_kind_twice_from_one_plugin_is_a_registration_error():
    def register_envs(register):
        register(LinearConfig, LinearEnv)
        register(LinearConfig, LinearEnv)

    registry = make_registry(plugin("twice", register_envs=register_envs))
    assert registry.env.kinds() == []
    assert registry.failures[0].reason == "register_envs: env kind 'linear' registered twice"
    assert registry.failures[0].slot == "env"


def test_event_hooks_reach_every_plugin():
    calls = []
    registry = make_registry(
        plugin("logger_a", on_iteration_end=lambda run_dir, iteration, metrics: calls.append(("a", iteration))),
        plugin("logger_b", on_iteration_end=lambda iteration: calls.append(("b", iteration))),
    )
    registry.hooks.on_iteration_end(run_dir=None, iteration=3, metrics={"x": 1.0})
    assert sorted(calls) == [("a", 3), ("b", 3)]


def test_registry_slots_match_recipe_tables_and_interfaces():
    registry = make_registry()
    assert [s.name for s in registry.slots] == ["env", "world_model", "estimator", "scheduler"]
    assert [s.interface for s in registry.slots] == [mb.DiffEnv, mb.WorldModel, mb.GradientEstimator,
                                                       mb.Scheduler]
    with pytest.raises(KeyError, match="unknown extension point 'policy'"):
        registry.slot("policy")
    assert torch.device("cpu") == mb.BuildContext.cpu().device


def test_the_same_module_twice_keeps_the_first_registration_intact():
    calls = []
    module = env_plugin("linear_plugin", LinearEnv)
    module.on_run_end = mb.hookimpl(lambda metrics: calls.append(metrics))
    registry = make_registry(module, module)
    assert registry.env.kinds() == ["linear"] and registry.pm.get_plugin("linear_plugin") is module
    assert [f.reason for f in registry.failures] == [
        "plugin name 'linear_plugin' from this module is already used by another plugin; "
        "use your distribution name as the entry-point name"]
    registry.hooks.on_run_end(run_dir=None, metrics={"eval/return": 1.0})
    assert calls == [{"eval/return": 1.0}]
