"""One extension point's kinds: what a plugin may register (:func:`check_config_class`), the look-ups a recipe
makes with errors that say how to fix them, and building a component from its config.

:mod:`.registry` holds one :class:`Slot` per extension point and loads the plugins that fill them.
"""
from __future__ import annotations

import difflib
import importlib
import re
from typing import TYPE_CHECKING, Any, Callable, Literal, get_args, get_origin

import attrs

from ..contracts.component import ComponentConfig
from ..errors import MissingDependency, PluginError, missing_dependency

if TYPE_CHECKING:
    from ..contracts.context import BuildContext

_KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


@attrs.frozen
class PluginInfo:
    """A loaded plugin: its registration name (the entry-point name) and where it came from."""

    name: str
    distribution: str | None = None
    version: str | None = None

    @property
    def origin(self) -> str:
        """``mbmix-fw 0.1.0``, or ``""`` for a module registered directly (tests)."""
        return f"{self.distribution} {self.version}" if self.distribution else ""

    @property
    def label(self) -> str:
        """``'toy' (mbmix-fw 0.1.0)``: how errors name a plugin."""
        return f"'{self.name}' ({self.origin})" if self.origin else f"'{self.name}'"

    def __str__(self) -> str:
        return f"{self.name} ({self.origin})" if self.origin else self.name

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "distribution": self.distribution, "version": self.version}


@attrs.frozen
class Entry:
    """One registered kind: its config model, its factory, and the plugin that provided it."""

    slot: str
    kind: str
    config: type[ComponentConfig]
    factory: Callable[[Any, BuildContext], Any]
    plugin: PluginInfo

    def missing_dependency(self) -> str | None:
        """The install hint when the factory declares packages (``mb.lazy_factory(..., requires=...,
        extra=...)``) that are not installed, else ``None``. Imports nothing."""
        requires, extra = getattr(self.factory, "requires", ()), getattr(self.factory, "extra", None)
        if not requires or not extra:
            return None
        return missing_dependency(*requires, extra=extra, component=f"{self.slot} '{self.kind}'")


class RegistrationError(Exception):
    """A ``register()`` call broke a rule; the plugin making it is rolled back."""


class Slot:
    """One extension point (``env``, ``world_model``, ``estimator``, ``scheduler``): kind → :class:`Entry`.

    Two plugins registering one kind are both kept as a *conflict*: every other kind stays usable, and
    looking the conflicting kind up raises an error naming both plugins.
    """

    def __init__(self, name: str, hook: str, base: type[ComponentConfig], interface: str,
                 notes: Callable[[], str] = lambda: ""):
        self.name, self.hook, self.base, self._interface = name, hook, base, interface
        self._notes = notes  # why a kind may be missing: failed plugins, plugin filters (the registry's)
        self._entries: dict[str, list[Entry]] = {}

    @property
    def interface(self) -> type:
        """The class built components must be (imported on first use: it needs torch)."""
        module, _, name = self._interface.rpartition(".")
        return getattr(importlib.import_module(module, __package__), name)

    # ---- queries ----
    def kinds(self) -> list[str]:
        """Every registered kind, sorted (conflicting kinds included)."""
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [e for kind in self.kinds() for e in self._entries[kind]]

    def conflicts(self) -> dict[str, list[Entry]]:
        return {kind: es for kind, es in self._entries.items() if len(es) > 1}

    def __contains__(self, kind: object) -> bool:
        return kind in self._entries

    def get(self, kind: str) -> Entry:
        """The entry of ``kind``; raises :class:`PluginError` (unknown kind, conflict) with a fix."""
        entries = self._entries.get(kind)
        if not entries:
            raise PluginError(self.unknown_kind_message(kind))
        if len(entries) > 1:
            raise PluginError(self.conflict_message(kind))
        return entries[0]

    def unknown_kind_message(self, kind: str) -> str:
        kinds = self.kinds()
        if not kinds:
            message = f"unknown {self.name} kind '{kind}'; no {self.name} plugin is registered"
        else:
            close = difflib.get_close_matches(kind, kinds, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            message = f"unknown {self.name} kind '{kind}'{hint}; available: {', '.join(kinds)}"
        return message + self._notes()

    def missing_kind_message(self) -> str:
        kinds = self.kinds()
        if not kinds:
            return f"missing; no {self.name} plugin is registered" + self._notes()
        return f"missing; set kind to one of: {', '.join(kinds)}"

    def conflict_message(self, kind: str) -> str:
        entries = self._entries[kind]
        providers = ", ".join(str(e.plugin) for e in entries)
        return (f"'{kind}' is registered by {len(entries)} plugins: {providers}; "
                f"disable one with MBMIX_FW_DISABLE_PLUGINS={entries[-1].plugin.name}")

    # ---- building ----
    def build(self, config: ComponentConfig, ctx: BuildContext) -> Any:
        """Call the factory of ``config.kind`` and check what it returns.

        A ``ModuleNotFoundError`` raised by the factory becomes :class:`MissingDependency`; a result that
        is not a ``self.interface`` is a :class:`PluginError` naming the plugin.
        """
        entry = self.get(config.kind)
        where = f"plugin {entry.plugin.label}: {self.name} '{entry.kind}'"
        if not isinstance(config, entry.config):
            raise PluginError(f"{where} expects a {entry.config.__name__}, got {type(config).__name__}")
        try:
            component = entry.factory(config, ctx)
        except MissingDependency as exc:
            text = str(exc).replace("this component", f"{self.name} '{entry.kind}'", 1)
            raise MissingDependency(f"plugin {entry.plugin.label}: {text}") from exc
        except ModuleNotFoundError as exc:
            raise MissingDependency(
                f"{where} needs '{exc.name}', which is not installed; install it (see the plugin's "
                f"optional dependencies)") from exc
        except Exception as exc:
            if hasattr(exc, "add_note"):
                exc.add_note(f"while building {self.name} '{entry.kind}' with plugin {entry.plugin.label}")
            raise
        if not isinstance(component, self.interface):
            raise PluginError(
                f"plugin {entry.plugin.label}: factory for {self.name} '{entry.kind}' returned "
                f"{type(component).__name__}, expected mbmix_fw.{self.interface.__name__}")
        return component

    # ---- registration ----
    def registrar(self, plugin: PluginInfo, staged: list[Entry]) -> Callable[..., None]:
        """The ``register(config_cls, factory)`` callable handed to one plugin's hook."""

        def register(config_cls: type[ComponentConfig], factory: Callable[[Any, BuildContext], Any]) -> None:
            kind = check_config_class(config_cls, self.base, self.hook)
            if not callable(factory):
                raise RegistrationError(
                    f"{self.hook}: factory for {self.name} '{kind}' must be callable, got {type(factory).__name__}")
            if any(e.slot == self.name and e.kind == kind for e in staged):
                raise RegistrationError(f"{self.hook}: {self.name} kind '{kind}' registered twice")
            staged.append(Entry(self.name, kind, config_cls, factory, plugin))

        return register

    def add(self, entry: Entry) -> None:
        self._entries.setdefault(entry.kind, []).append(entry)


def check_config_class(config_cls: Any, base: type[ComponentConfig], hook: str) -> str:
    """The kind a config class declares, after checking it follows the registration rules."""
    name = getattr(config_cls, "__name__", repr(config_cls))
    if not (isinstance(config_cls, type) and issubclass(config_cls, base)):
        raise RegistrationError(f"{hook}: {name} must subclass mbmix_fw.{base.__name__}")
    field = config_cls.model_fields.get("kind")
    values = get_args(field.annotation) if field is not None and get_origin(field.annotation) is Literal else ()
    kind = values[0] if len(values) == 1 else None
    if not isinstance(kind, str) or field.default != kind:
        example = kind if isinstance(kind, str) else _snake(name.removesuffix("Config")) or "name"
        raise RegistrationError(
            f"{hook}: {name}.kind must be declared as kind: Literal['{example}'] = '{example}'")
    if not _KIND_PATTERN.match(kind):
        raise RegistrationError(f"{hook}: kind '{kind}' must be lowercase snake_case")
    return kind


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
