"""Deferred imports for plugins: register a component without importing its (torch-heavy) module.

Registration runs for ``mbmix-fw plugins`` and ``validate``, which must stay instant; the classes a
plugin registers are only needed when a run builds them.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Sequence

from .errors import require


def lazy_attributes(package: str, locations: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from ``locations[name]`` (a relative module) on first use.

    Usage in a plugin's ``__init__.py``: ``__getattr__ = mb.lazy_attributes(__name__, {"Shac": ".shac"})``,
    so ``from my_plugin import Shac`` works without importing ``.shac`` at registration time.
    """

    def __getattr__(name: str) -> Any:
        if name not in locations:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(locations[name], package), name)

    return __getattr__


def lazy_factory(target: str, *, requires: Sequence[str] = (), extra: str | None = None) -> Callable[[Any, Any], Any]:
    """A factory ``(config, ctx) -> component`` for ``"package.module:Class"`` that imports on first call.

    ``requires`` names the optional packages the component needs and ``extra`` the mbmix-fw extra that
    installs them (``requires=("jax", "brax"), extra="brax"``). A plugin whose extra is missing then
    still registers its kind and config (recipes validate, ``mbmix-fw plugins`` lists the kind as
    needing the extra), and building it raises :class:`~mbmix_fw.MissingDependency` with the pip command
    before anything is imported. The registry reads ``factory.requires`` / ``factory.extra``.
    """
    module_name, _, attribute = target.partition(":")
    if not attribute:
        raise ValueError(f"lazy_factory target must look like 'package.module:Name', got {target!r}")
    if requires and not extra:
        raise ValueError("lazy_factory: requires=... needs extra='name' (the pip extra that installs them)")

    def factory(config: Any, ctx: Any) -> Any:
        if requires:
            require(*requires, extra=extra or "")
        return getattr(importlib.import_module(module_name), attribute)(config, ctx)

    factory.__name__ = f"make_{attribute}"
    factory.__qualname__ = f"lazy_factory({target!r})"
    factory.requires, factory.extra = tuple(requires), extra  # type: ignore[attr-defined]
    return factory
