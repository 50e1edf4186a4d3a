"""Recipes: a TOML file naming one plugin per extension point, validated in two stages.

Stage 1, the envelope :class:`Recipe`: the tables ``[run]``, ``[env]`` (required), ``[world_model]``
(optional: absent means model-free), ``[estimator]`` (required), ``[scheduler]`` (optional, default
``kind = "model_free"``), ``[policy]``, ``[critic]``, ``[optim]``, ``[sweep]`` (optional, read only by
``mbmix-fw sweep``); anything else is an error.
Stage 2, each plugin table: a wrap validator reads its ``kind``, looks the kind up in the registry passed
in the validation context (``context={"registry": reg}``, else :func:`~mbmix_fw.building.registry.default_registry`)
and validates the table with that plugin's config model. There is no union of all configs, so plugins can
be added without rebuilding any model.

Every problem becomes one line ``"{file}: {dotted.field}: {message}"`` in a :class:`~mbmix_fw.RecipeError`.
"""
from __future__ import annotations

import copy
import difflib
import logging
import math
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Union, get_args, get_origin

from pydantic import (BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, ValidationInfo,
                      ValidatorFunctionWrapHandler, field_validator)
from pydantic_core import PydanticCustomError

from ..contracts.component import EnvConfig, EstimatorConfig, SchedulerConfig, WorldModelConfig
from ..errors import PluginError, RecipeError
from ..contracts.settings import CriticSettings, OptimSettings, PolicySettings, RunSettings
from ..contracts.sweep_settings import SweepSettings
from .moved_keys import key_moves, move_keys

if TYPE_CHECKING:
    from .registry import Registry

log = logging.getLogger("mbmix_fw")

PLUGIN_TABLES = ("env", "world_model", "estimator", "scheduler")
DEFAULT_SCHEDULER = {"kind": "model_free"}
"""The scheduler used when a recipe has no ``[scheduler]`` table: train through the simulator only."""

_KIND_ERRORS = ("missing_kind", "unknown_kind", "kind_conflict", "kind_type")

Override = Union[str, tuple[str, Any]]
"""``"section.key=value"`` (value parsed as TOML, else kept as a string) or ``("section.key", value)``."""


class Recipe(BaseModel):
    """A validated recipe. Build one from TOML with :func:`load_recipe` or directly in Python::

        Recipe(env=PendulumConfig(num_envs=8), estimator=ShacConfig(horizon=16))

    ``model_dump(mode="json")`` keeps every plugin field (``SerializeAsAny``) and validates back to an
    equal recipe, which is how ``recipe.json`` in a run folder reproduces the run.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: RunSettings = Field(default_factory=RunSettings)
    env: SerializeAsAny[EnvConfig]
    world_model: SerializeAsAny[WorldModelConfig] | None = None
    estimator: SerializeAsAny[EstimatorConfig]
    scheduler: SerializeAsAny[SchedulerConfig] = Field(
        default_factory=lambda: dict(DEFAULT_SCHEDULER), validate_default=True)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    critic: CriticSettings = Field(default_factory=CriticSettings)
    optim: OptimSettings = Field(default_factory=OptimSettings)
    sweep: SweepSettings | None = Field(None, exclude=True)
    """Only for ``mbmix-fw sweep`` (``run`` ignores it); never written to a run's ``recipe.json``."""

    @field_validator(*PLUGIN_TABLES, mode="wrap")
    @classmethod
    def _validate_plugin_table(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                               info: ValidationInfo) -> Any:
        if not isinstance(value, dict):  # a config object (programmatic use), None, or a wrong type
            return handler(value)
        registry = (info.context or {}).get("registry")
        if registry is None:
            from .registry import default_registry

            registry = default_registry()
        slot = registry.slot(info.field_name)
        kind = value.get("kind")
        if kind is None:
            raise PydanticCustomError("missing_kind", "{message}", {"message": slot.missing_kind_message()})
        if not isinstance(kind, str):
            raise PydanticCustomError("kind_type", "{message}", {
                "message": f"kind must be a string, got {_toml_type(kind)}"})
        try:
            entry = slot.get(kind)
        except PluginError as exc:
            error_type = "kind_conflict" if len(slot.conflicts().get(kind, [])) > 1 else "unknown_kind"
            raise PydanticCustomError(error_type, "{message}", {"message": str(exc)}) from None
        return entry.config.model_validate(value, context=info.context)


def parse_override(text: str) -> tuple[str, Any]:
    """``"estimator.lam=0.95"`` → ``("estimator.lam", 0.95)``; the value is read as a TOML value when it is
    one (numbers, booleans, ``[1, 2]``, ``"quoted"``), else kept as the raw string (``run.out=runs/x``).

    The value is then validated as strictly as one written in the TOML file: ``layer_norm=yes`` is the
    string ``"yes"`` and fails, ``num_envs='"64"'`` is a string and fails, ``actor_lr=nan`` fails."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise RecipeError([f"--set {text}: expected section.key=value, e.g. --set estimator.lam=0.95"])
    raw = raw.strip()
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[Override]) -> dict[str, Any]:
    """A copy of the raw recipe ``data`` with the overrides set (tables created as needed)."""
    data = copy.deepcopy(data)
    for override in overrides:
        key, value = parse_override(override) if isinstance(override, str) else override
        parts = [part.strip() for part in key.split(".")]
        table = data
        for depth, part in enumerate(parts[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise RecipeError([f"--set {key}: '{'.'.join(parts[:depth + 1])}' is not a table"])
        table[parts[-1]] = value
    return data


def validate_recipe(data: dict[str, Any], registry: "Registry | None" = None,
                    source: str = "<recipe>") -> Recipe:
    """Validate plain recipe data (parsed TOML or a ``recipe.json``); errors name ``source``. Keys that
    moved to another table are read where they now live, with a warning (:mod:`.moved_keys`)."""
    if registry is None:
        from .registry import default_registry

        registry = default_registry()
    data = move_keys(data, source, renamed=lambda table, kind: _renamed_fields(registry, table, kind))
    try:
        recipe = Recipe.model_validate(data, context={"registry": registry})
    except ValidationError as exc:
        raise RecipeError(format_problems(exc, data, registry, source)) from None
    if recipe.scheduler.requires_world_model and recipe.world_model is None:
        raise RecipeError([f"{source}: world_model: missing; scheduler '{recipe.scheduler.kind}' trains "
                           f"through a world model: add a [world_model] table (e.g. kind = \"sobolev_mlp\")"])
    if getattr(recipe.world_model, "probe_source", None) == "adjoint" and not recipe.scheduler.simulator_gradient:
        raise RecipeError([f"{source}: world_model.probe_source: 'adjoint' takes its Jacobian probes from the "
                           f"actor's backward through the simulator, which scheduler '{recipe.scheduler.kind}' "
                           f"never runs as configured; set probe_source = \"random\""])
    return recipe


def _renamed_fields(registry: "Registry", table: str, kind: Any) -> dict[str, str]:
    """The ``renamed_fields`` of the config registered for ``kind`` in plugin table ``table`` (none when the
    table is not a plugin's or the kind is unknown: validation then says so)."""
    if table not in PLUGIN_TABLES or not isinstance(kind, str):
        return {}
    try:
        return dict(registry.slot(table).get(kind).config.renamed_fields)
    except PluginError:
        return {}


def load_recipe(path: str | Path, registry: "Registry | None" = None,
                overrides: Iterable[Override] = ()) -> Recipe:
    """Read, override and validate a TOML recipe; raises :class:`RecipeError` with one line per problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([f"{source}: no such file"]) from None
    except IsADirectoryError:
        raise RecipeError([f"{source}: is a directory, expected a .toml recipe"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([f"{source}: cannot read: {exc}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([f"{source}: {exc}"]) from None
    overrides = list(overrides)
    try:
        if registry is None:
            from .registry import default_registry

            registry = default_registry()
        renamed = lambda table, kind: _renamed_fields(registry, table, kind)  # noqa: E731
        # A moved key is moved in the file and in each --set alike, so `--set old=x` still wins over the file.
        moves = key_moves(apply_overrides(data, overrides), renamed)
        data = move_keys(data, source, renamed=renamed)
        overrides = [_moved_override(o, moves) for o in overrides]
        return validate_recipe(apply_overrides(data, overrides), registry, source)
    except RecipeError as exc:
        raise RecipeError(blame_overrides(exc.problems, source, overrides)) from None


def _moved_override(override: Override, moves: dict[str, str]) -> Override:
    """``override`` with a key that moved (:func:`~.moved_keys.key_moves`) renamed, and one warning line."""
    key, value = parse_override(override) if isinstance(override, str) else override
    key = ".".join(part.strip() for part in key.split("."))
    if key not in moves:
        return override
    shown = f"--set {override.strip()}" if isinstance(override, str) else key
    log.warning("%s: %s: deprecated, read as %s", shown, key, moves[key])
    return f"{moves[key]}={override.partition('=')[2]}" if isinstance(override, str) else (moves[key], value)


def blame_overrides(problems: list[str], source: str, overrides: Iterable[Override]) -> list[str]:
    """Lines ``"{source}: a.b: …"`` about a value an override set name it instead: ``--set a.b=2: a.b: …``
    (the value that is wrong came from the command line, not from the file)."""
    texts: dict[str, str] = {}
    for override in overrides:
        if isinstance(override, str):  # (key, value) pairs come from code (e.g. --out), not from --set
            key = ".".join(part.strip() for part in parse_override(override)[0].split("."))
            texts[key] = override.strip()
    blamed = []
    for line in problems:
        loc = line.removeprefix(f"{source}: ").split(": ", 1)[0] if line.startswith(f"{source}: ") else None
        key = next((k for k in texts if loc is not None and (loc == k or loc.startswith(k + "."))), None)
        blamed.append(f"--set {texts[key]}: {line.removeprefix(f'{source}: ')}" if key is not None else line)
    return blamed


# ---- error formatting ----
def format_problems(exc: ValidationError, data: Any, registry: "Registry", source: str) -> list[str]:
    """One ``"{source}: {dotted.field}: {message}"`` line per pydantic error, rewritten for humans."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        message = error["msg"]
        if error["type"] in _KIND_ERRORS:
            loc.append("kind")
        elif error["type"] == "extra_forbidden":
            message = _unknown_field_message(loc[-1], _fields_at(loc[:-1], data, registry))
        elif error["type"] == "missing" and len(loc) == 1 and loc[0] in PLUGIN_TABLES:
            slot = registry.slot(loc[0])
            kinds = ", ".join(slot.kinds()) or "none registered"
            message = f"missing required table [{loc[0]}]; add it with kind = one of: {kinds}"
        elif error["type"] == "model_type" and len(loc) == 1:
            message = f"expected a table [{loc[0]}], got {_toml_type(error['input'])}"
        elif error["type"] in _EXPECTED:
            message = _type_message(_EXPECTED[error["type"]], error["input"])
        elif error["type"] == "finite_number":
            message = f"expected a finite number, got {_toml_value(error['input'])} (nan and inf are not allowed)"
        elif error["type"] == "value_error":
            message = str(error.get("ctx", {}).get("error", message))
            loc, message = _blamed_field(loc, message, data, registry)
        elif error["type"] in _BOUNDS:
            message = f"{message}, got {_toml_value(error['input'])}"
        lines.append(f"{source}: {'.'.join(loc)}: {message}" if loc else f"{source}: {message}")
    return lines


_EXPECTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
             "string_type": "a string", "list_type": "an array", "tuple_type": "an array",
             "dict_type": "a table", "model_type": "a table"}
"""Strict-mode type errors, by pydantic error type: what the field expects, in TOML's words."""
_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal",
           "too_short", "too_long", "string_too_short")


def _type_message(expected: str, value: Any) -> str:
    """``expected an integer, got string "64" (write it without quotes: 64)``."""
    message = f"expected {expected}, got {_toml_type(value)} {_toml_value(value)}"
    if isinstance(value, str):
        try:
            parsed = tomllib.loads(f"value = {value.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            return message
        if expected in _WHAT_IS.get(type(parsed), ()):
            return f"{message} (write it without quotes: {value.strip()})"
    elif isinstance(value, float) and expected == "an integer" and value.is_integer():
        return f"{message} (write it as an integer: {int(value)})"
    return message


_WHAT_IS = {bool: ("true or false",), int: ("an integer", "a number"), float: ("a number",),
            list: ("an array",)}
"""What a value of each TOML type satisfies (for the "write it without quotes" hint)."""
_TOML_TYPES = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", tuple: "array",
               dict: "table"}


def _toml_type(value: Any) -> str:
    """The TOML name of ``value``'s type (``"string"``, ``"boolean"``, ``"date-time"``…)."""
    name = _TOML_TYPES.get(type(value))
    if name is not None:
        return name
    if isinstance(value, BaseModel):
        return "table"
    return "date-time" if hasattr(value, "isoformat") else type(value).__name__


def _toml_value(value: Any) -> str:
    """A short TOML spelling of ``value`` for an error message (long values are cut)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif isinstance(value, float) and not math.isfinite(value):
        text = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    elif isinstance(value, (list, tuple, dict)) or hasattr(value, "isoformat"):
        text = str(value)
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_field_message(name: str, fields: list[str]) -> str:
    close = difflib.get_close_matches(name, fields, n=1)
    if close:
        return f"unknown field (did you mean '{close[0]}'?)"
    if fields:
        return f"unknown field; expected one of: {', '.join(fields)}"
    return "unknown field"


def _fields_at(loc: list[str], data: Any, registry: "Registry") -> list[str]:
    """Field names of the model that validates the table at ``loc`` (for did-you-mean hints)."""
    model: Any = Recipe
    for depth, part in enumerate(loc):
        if model is Recipe and depth == 0 and part in PLUGIN_TABLES:
            table = data.get(part) if isinstance(data, dict) else None
            kind = table.get("kind") if isinstance(table, dict) else None
            try:
                model = registry.slot(part).get(kind).config
            except (PluginError, TypeError):
                return []
            continue
        field = model.model_fields.get(part) if _is_model(model) else None
        model = _model_in(field.annotation) if field is not None else None
        if model is None:
            return []
    return sorted(model.model_fields) if _is_model(model) else []


def _blamed_field(loc: list[str], message: str, data: Any, registry: "Registry") -> tuple[list[str], str]:
    """A check across fields (a ``model_validator``) fails at the table, not at a field: when its message
    starts with the name of a field of that table and a colon (``"probes: alpha_s > 0 needs probes >= 1"``),
    the line names that field (``world_model.probes: …``), as a field validator's would, so the user and
    ``--set`` blame (:func:`blame_overrides`) find it."""
    field, sep, rest = message.partition(": ")
    if sep and rest and field.isidentifier() and field in _fields_at(loc, data, registry):
        return [*loc, field], rest
    return loc, message


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``Model``, ``Model | None``, ``SerializeAsAny[Model]``)."""
    if _is_model(annotation):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) is not None else ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


__all__ = ["DEFAULT_SCHEDULER", "Recipe", "apply_overrides", "load_recipe",
           "parse_override", "validate_recipe"]
