"""Human-readable descriptions of config models: every field's type, allowed values, default and meaning.

``mbmix-fw plugins --verbose`` prints these for the core tables and every plugin's config, so the config
classes (their annotations, ``Field(ge=...)`` ranges and attribute docstrings) are the single source of
what a recipe may say. pydantic only: listing plugins must not import torch.
"""
from __future__ import annotations

import json
import types
from typing import Annotated, Any, Iterable, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ..contracts.settings import CriticSettings, OptimSettings, PolicySettings, RunSettings

CORE_TABLES: dict[str, type[BaseModel]] = {
    "run": RunSettings, "policy": PolicySettings, "critic": CriticSettings, "optim": OptimSettings,
}
SKIPPED_FIELDS = ("kind",)  # the table's selector, shown as the kind's name instead


def describe_model(model: type[BaseModel], indent: str = "") -> list[str]:
    """One block per field: ``name: type = default  range`` then its whole description, indented."""
    lines = []
    for name, field in model.model_fields.items():
        if name in SKIPPED_FIELDS:
            continue
        head = f"{indent}{name}: {type_text(field.annotation, field.metadata)}"
        head += " (required)" if field.is_required() else f" = {value_text(field.get_default(call_default_factory=True))}"
        lines.append(head)
        for line in (field.description or "(no description)").splitlines():
            lines.append(f"{indent}    {line}".rstrip())
    return lines


def undocumented_fields(model: type[BaseModel]) -> list[str]:
    """Fields (other than ``kind``) without a description: attribute docstring or ``Field(description=)``."""
    return [name for name, field in model.model_fields.items()
            if name not in SKIPPED_FIELDS and not (field.description or "").strip()]


def type_text(annotation: Any, metadata: Iterable[Any] = ()) -> str:
    """``int ≥ 1``, ``float in [0, 1)``, ``"score" | "straight_through"``, ``list[int > 0]``…"""
    text = _bare_type(annotation)
    bounds = range_text(metadata)
    return f"{text} {bounds}" if bounds else text


def range_text(metadata: Iterable[Any]) -> str:
    """The bounds carried by pydantic/annotated-types metadata as ``≥ 1``, ``in (0, 0.5]``…"""
    found: dict[str, Any] = {}
    for item in metadata:
        constraints = item.metadata if isinstance(item, FieldInfo) else [item]
        for constraint in constraints:
            for key in ("ge", "gt", "le", "lt", "min_length", "max_length"):
                value = getattr(constraint, key, None)
                if value is not None:
                    found[key] = value
    low_key = "ge" if "ge" in found else "gt" if "gt" in found else None
    high_key = "le" if "le" in found else "lt" if "lt" in found else None
    parts = []
    if low_key and high_key:
        parts.append(f"in {'[' if low_key == 'ge' else '('}{_number(found[low_key])}, "
                     f"{_number(found[high_key])}{']' if high_key == 'le' else ')'}")
    elif low_key:
        parts.append(f"{'≥' if low_key == 'ge' else '>'} {_number(found[low_key])}")
    elif high_key:
        parts.append(f"{'≤' if high_key == 'le' else '<'} {_number(found[high_key])}")
    if "min_length" in found or "max_length" in found:
        low, high = found.get("min_length", 0), found.get("max_length")
        parts.append(f"length ≥ {low}" if high is None else f"length in [{low}, {high}]")
    return ", ".join(parts)


def value_text(value: Any) -> str:
    """A default as it would be written in TOML (``"auto"``, ``true``, ``[64, 64]``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {value_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, BaseModel):
        return value_text(value.model_dump())
    if value is None:
        return "none"
    return _number(value) if isinstance(value, (int, float)) else repr(value)


def _number(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 2**31 and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    return repr(value)


def _bare_type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(value_text(a) for a in args)
    if origin is Annotated:
        return type_text(args[0], args[1:])
    if origin is Union or origin is types.UnionType:
        return " | ".join(_bare_type(a) for a in args)
    if annotation is type(None):
        return "none"
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _bare_type(a) for a in args)
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{inner}]" if inner else name
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)

