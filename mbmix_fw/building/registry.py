"""Plugin discovery and the name → factory registry that recipes and the CLI use.

Research code never needs this module: it passes component objects to the trainer directly. The registry
only maps the ``kind`` names written in recipes to plugin factories.

Loading is isolated per plugin. Entry points of group ``mbmix_fw`` are loaded one at a time; a plugin that
raises on import, declares a hook argument the hook does not provide, misspells a hook, raises inside a
``register_*`` hook or calls ``register()`` wrongly is rolled back completely (unregistered from pluggy,
none of its kinds kept) and recorded as a :class:`PluginFailure` naming its distribution. Every other
plugin still works. (pluggy's own ``load_setuptools_entrypoints`` stops at the first broken plugin.)

Environment variables (read by :func:`load_registry` when the matching argument is ``None``):

- ``MBMIX_FW_PLUGINS=a,b``: load only these entry-point names (set but empty: load none).
- ``MBMIX_FW_DISABLE_PLUGINS=a,b``: never load these entry-point names.
- ``MBMIX_FW_STRICT_PLUGINS=1``: a plugin failure raises :class:`~mbmix_fw.PluginError` at once.

Registering imports nothing heavy: plugin modules must keep jax/brax/warp imports inside factories.
"""
from __future__ import annotations

import difflib
import functools
import importlib.metadata
import inspect
import os
import warnings
from typing import Any, Iterable, Sequence

import attrs
import pluggy

from ..contracts import hookspecs
from ..contracts.component import EnvConfig, EstimatorConfig, SchedulerConfig, WorldModelConfig
from ..errors import PluginError
from .slot import Entry, PluginInfo, RegistrationError, Slot

ENTRY_POINT_GROUP = "mbmix_fw"
SLOT_NAMES = ("env", "world_model", "estimator", "scheduler")


class PluginWarning(UserWarning):
    """A plugin failed to load; emitted by :func:`default_registry` (the CLI prints its own lines)."""


@attrs.frozen
class PluginFailure:
    """A plugin that was not loaded, and why (one line, no traceback)."""

    plugin: PluginInfo
    reason: str
    slot: str | None = None
    """The extension point whose ``register_*`` hook failed, when the failure happened there."""

    @property
    def message(self) -> str:
        return f"plugin {self.plugin.label} not loaded: {self.reason}"


class Registry:
    """The loaded plugins and their kinds, one :class:`Slot` per extension point.

    ``hooks`` is pluggy's hook relay: the trainer calls ``hooks.on_iteration_end(...)`` and
    ``hooks.on_run_end(...)`` on it so event hooks reach every loaded plugin.
    """

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        contracts = "..contracts."  # the interfaces are imported on first use: they need torch
        self.env = Slot("env", "register_envs", EnvConfig, contracts + "env.DiffEnv", self._notes)
        self.world_model = Slot("world_model", "register_world_models", WorldModelConfig,
                                contracts + "world_model.WorldModel", self._notes)
        self.estimator = Slot("estimator", "register_estimators", EstimatorConfig,
                              contracts + "estimator.GradientEstimator", self._notes)
        self.scheduler = Slot("scheduler", "register_schedulers", SchedulerConfig,
                              contracts + "scheduler.Scheduler", self._notes)
        self.plugins: list[PluginInfo] = []
        self.failures: list[PluginFailure] = []
        self.filter_note = ""  # set by load_registry when an environment variable filtered the plugins

    @property
    def slots(self) -> tuple[Slot, ...]:
        return (self.env, self.world_model, self.estimator, self.scheduler)

    def slot(self, name: str) -> Slot:
        if name not in SLOT_NAMES:
            raise KeyError(f"unknown extension point '{name}'; expected one of: {', '.join(SLOT_NAMES)}")
        return getattr(self, name)

    @property
    def hooks(self) -> Any:
        return self.pm.hook

    def failure_note(self) -> str:
        """``; note: 1 plugin failed to load (x); run 'mbmix-fw plugins'`` or ``""``."""
        if not self.failures:
            return ""
        names = ", ".join(sorted({f.plugin.name for f in self.failures}))
        count = len({f.plugin.name for f in self.failures})
        noun = "plugin" if count == 1 else "plugins"
        return f"; note: {count} {noun} failed to load ({names}); run 'mbmix-fw plugins'"

    def _notes(self) -> str:
        """What a slot adds to a missing or unknown kind's message: failed plugins, plugin filters."""
        return self.failure_note() + self.filter_note

    def kinds_of(self, plugin_name: str) -> dict[str, list[str]]:
        """``{slot: [kinds]}`` registered by one plugin."""
        return {s.name: [e.kind for e in s.entries() if e.plugin.name == plugin_name] for s in self.slots}

    # ---- loading ----
    def add_plugin(self, obj: Any, info: PluginInfo, *, strict: bool = False) -> bool:
        """Register one plugin object (usually a module) atomically; False (and a failure) if it breaks."""
        try:
            if self.pm.get_plugin(info.name) is not None or any(p.name == info.name for p in self.plugins):
                other = next((p for p in self.plugins if p.name == info.name), None)
                used_by = other.origin if other is not None and other.origin else "another plugin"
                source = info.origin or "this module"
                raise RegistrationError(
                    f"plugin name '{info.name}' from {source} is already used by {used_by}; "
                    f"use your distribution name as the entry-point name")
            self._register_hooks(obj, info)
        except _HookFailure as exc:
            return self._fail(info, str(exc), exc.slot, strict)
        except RegistrationError as exc:
            return self._fail(info, str(exc), None, strict)
        self.plugins.append(info)
        return True

    def _register_hooks(self, obj: Any, info: PluginInfo) -> None:
        try:
            self.pm.register(obj, name=info.name)
        except pluggy.PluginValidationError as exc:
            if self.pm.get_plugin(info.name) is obj:  # older pluggy keeps it registered
                self.pm.unregister(obj)
            raise RegistrationError(_describe_validation_error(self.pm, obj, exc)) from exc
        except ValueError as exc:  # pluggy: this object is already registered under another name
            raise RegistrationError(str(exc)) from exc
        try:
            self._check_hook_names(obj)
            staged = self._call_register_hooks(obj, info)
        except BaseException:
            self.pm.unregister(obj)  # roll back: no hook of a broken plugin is ever called again
            raise
        for entry in staged:
            self.slot(entry.slot).add(entry)

    def _check_hook_names(self, obj: Any) -> None:
        for caller in self.pm.get_hookcallers(obj) or []:
            if caller.has_spec():
                continue
            if any(i.plugin is obj and not i.optionalhook for i in caller.get_hookimpls()):
                close = difflib.get_close_matches(caller.name, _hook_names(), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise RegistrationError(f"unknown hook '{caller.name}'{hint}")

    def _call_register_hooks(self, obj: Any, info: PluginInfo) -> list[Entry]:
        """Call this plugin's ``register_*`` hooks; its entries are kept only if all of them succeed."""
        staged: list[Entry] = []
        for slot in self.slots:
            for impl in getattr(self.pm.hook, slot.hook).get_hookimpls():
                if impl.plugin is not obj:
                    continue
                register = slot.registrar(info, staged)
                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except RegistrationError as exc:
                    raise _HookFailure(str(exc), slot.name) from exc
                except Exception as exc:
                    raise _HookFailure(f"{slot.hook} raised {type(exc).__name__}: {exc}", slot.name) from exc
        return staged

    def _fail(self, info: PluginInfo, reason: str, slot: str | None, strict: bool) -> bool:
        failure = PluginFailure(info, reason, slot)
        self.failures.append(failure)
        if strict:
            raise PluginError(failure.message)
        return False


class _HookFailure(Exception):
    def __init__(self, message: str, slot: str):
        super().__init__(message)
        self.slot = slot


def _hook_names() -> list[str]:
    return [n for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, "mbmix_fw_spec")]


def _describe_validation_error(pm: pluggy.PluginManager, obj: Any, exc: Exception) -> str:
    """``register_envs(registry) asks for 'registry'; the hook provides: register`` (pluggy's text otherwise)."""
    for attr in dir(obj):
        if attr.startswith("_") or pm.parse_hookimpl_opts(obj, attr) is None:
            continue
        caller = getattr(pm.hook, attr, None)
        if caller is None or caller.spec is None:
            continue
        try:
            params = list(inspect.signature(getattr(obj, attr)).parameters)
        except (TypeError, ValueError):
            continue
        extra = [p for p in params if p not in caller.spec.argnames]
        if extra:
            asked = ", ".join(f"'{p}'" for p in extra)
            return (f"{attr}({', '.join(params)}) asks for {asked}; "
                    f"the hook provides: {', '.join(caller.spec.argnames)}")
    return str(exc).splitlines()[0]


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _distribution_of(ep: importlib.metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def load_registry(
    *,
    entry_points: bool = True,
    modules: Sequence[Any] = (),
    allow: Iterable[str] | None = None,
    disable: Iterable[str] | None = None,
    strict: bool | None = None,
) -> Registry:
    """Build a registry from the ``mbmix_fw`` entry points and/or explicit plugin modules.

    ``allow`` / ``disable`` filter entry points by name (``None``: read ``MBMIX_FW_PLUGINS`` /
    ``MBMIX_FW_DISABLE_PLUGINS``). ``strict`` (``None``: ``MBMIX_FW_STRICT_PLUGINS=1``) raises on the first
    failure instead of recording it. ``modules`` are registered under their ``__name__`` after the
    entry points, without any filtering.
    """
    allow_from_env = _env_list("MBMIX_FW_PLUGINS") if allow is None and entry_points else None
    disabled_from_env = _env_list("MBMIX_FW_DISABLE_PLUGINS") if disable is None and entry_points else None
    allow = _env_list("MBMIX_FW_PLUGINS") if allow is None else list(allow)
    disabled = set(_env_list("MBMIX_FW_DISABLE_PLUGINS") or []) if disable is None else set(disable)
    strict = os.environ.get("MBMIX_FW_STRICT_PLUGINS", "") not in ("", "0") if strict is None else strict
    registry = Registry()
    if entry_points:
        found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        found = sorted(found, key=lambda ep: (ep.name, _distribution_of(ep)[0] or ""))
        for ep in found:
            if ep.name in disabled or (allow is not None and ep.name not in allow):
                continue
            distribution, version = _distribution_of(ep)
            info = PluginInfo(ep.name, distribution, version)
            try:
                module = ep.load()
            except Exception as exc:
                registry._fail(info, f"{type(exc).__name__}: {exc}", None, strict)
                continue
            registry.add_plugin(module, info, strict=strict)
        for name in allow or []:
            if name not in {ep.name for ep in found}:
                names = ", ".join(sorted({ep.name for ep in found})) or "none"
                registry._fail(PluginInfo(name), f"named in MBMIX_FW_PLUGINS but not installed "
                                                  f"(installed: {names})", None, strict)
    for module in modules:
        registry.add_plugin(module, PluginInfo(getattr(module, "__name__", repr(module))), strict=strict)
    registry.filter_note = _filter_note(allow_from_env, disabled_from_env)
    return registry


def _filter_note(allow: list[str] | None, disable: list[str] | None) -> str:
    """Why a kind may be missing: the environment variables that limited which plugins loaded."""
    notes = []
    if allow is not None:
        notes.append("MBMIX_FW_PLUGINS is set but empty, so no installed plugin was loaded; unset it or "
                     "name the plugins to load (e.g. MBMIX_FW_PLUGINS=toy,estimators,schedulers)" if not allow
                     else f"MBMIX_FW_PLUGINS={','.join(allow)} loads only these plugins")
    if disable:
        notes.append(f"MBMIX_FW_DISABLE_PLUGINS={','.join(disable)} skips these plugins")
    return "".join(f"; note: {n}" for n in notes)


def make_registry(*modules: Any, strict: bool = False) -> Registry:
    """A registry of exactly ``modules`` (no entry-point scan, no environment variables): for tests."""
    return load_registry(entry_points=False, modules=modules, allow=(), disable=(), strict=strict)


@functools.cache
def default_registry() -> Registry:
    """The process-wide registry of installed plugins, loaded once; failures are warned about once."""
    registry = load_registry()
    for failure in registry.failures:
        warnings.warn(failure.message, PluginWarning, stacklevel=2)
    return registry
