"""Errors that reach users.

Every subclass of :class:`MbmixError` prints as one line without a traceback; the CLI maps
:class:`UserError` (bad recipe, missing file, unknown plugin) to exit code 2 and everything else to 1.
"""
from __future__ import annotations

import importlib.util

PROG = "mbmix-fw"
"""The command's name, as messages write it (``mbmix-fw: error: …``, ``run 'mbmix-fw resume DIR'``)."""


class MbmixError(Exception):
    """Base of every error mbmix-fw raises on purpose."""


class UserError(MbmixError):
    """Something the user can fix (exit code 2)."""


class TrainingDiverged(MbmixError):
    """Training cannot continue: every update was skipped as non-finite for too long, or a state about
    to be checkpointed is non-finite (exit code 1; the message names what went non-finite first)."""


class RecipeError(UserError):
    """A recipe failed validation. ``problems`` holds one line per problem, each naming file and field."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PluginError(UserError):
    """A plugin could not be found, loaded or built."""


class MissingDependency(PluginError):
    """An optional dependency of a plugin is not installed; the message carries the install hint."""


def require(*modules: str, extra: str, component: str = "this component") -> None:
    """Raise :class:`MissingDependency` unless every module in ``modules`` is importable.

    Factories call this before importing heavy packages so the user sees the pip command to run,
    e.g. ``env 'brax' needs 'jax', which is not installed: pip install 'mbmix-fw[brax]'``.
    """
    problem = missing_dependency(*modules, extra=extra, component=component)
    if problem is not None:
        raise MissingDependency(problem)


def missing_dependency(*modules: str, extra: str, component: str = "this component") -> str | None:
    """The install hint for the first of ``modules`` that is not installed, or ``None`` when all are.

    ``importlib.util.find_spec`` imports nothing, so ``mbmix-fw plugins`` can ask this of every kind."""
    for name in modules:
        if importlib.util.find_spec(name) is None:
            return f"{component} needs '{name}', which is not installed: pip install 'mbmix-fw[{extra}]'"
    return None
