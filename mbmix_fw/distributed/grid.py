"""Sweep planning: the ``[sweep]`` table, seed ranges, grid points and the validated recipe of every trial.

Torch-free and Ray-free: ``recipe.py`` imports :class:`SweepSettings` for the envelope, and the planner
validates every trial's recipe through the recipe's own validation before anything runs, so a bad grid
value is a one-line recipe error (exit 2) with nothing written and no Ray started.
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import attrs
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import RecipeError, UserError

if TYPE_CHECKING:
    from ..building.recipe import Override, Recipe
    from ..building.registry import Registry

RESERVED_KEYS = {"run.seed": "use --seeds (or seeds in [sweep])",
                 "run.out": "the sweep chooses each trial's folder (runs/<sweep>/<trial>)"}


class SweepSettings(BaseModel):
    """The optional ``[sweep]`` table of a recipe; the ``sweep`` command's flags override it.

    ``mbmix-fw run`` ignores this table (it runs the recipe's own values once); ``validate`` checks it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    """``"section.key" = [v1, v2, ...]``: every combination of values is a grid point."""
    seeds: str | list[int] | None = None
    """``"0-4"``, ``"0,2,5"`` or ``[0, 2, 5]``; default: the recipe's ``run.seed`` alone."""
    name: str | None = None
    """Sweep folder name under the run root (default: ``<recipe stem>_sweep``)."""
    address: str | None = None
    """``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``; default: a local Ray started by the command."""
    cpus_per_trial: float = Field(1.0, gt=0)
    """CPUs Ray reserves for each trial; also the trial's torch threads."""
    gpus_per_trial: float = Field(0.0, ge=0)
    """GPUs per trial; fractions (0.25) let several small trials share one GPU."""
    max_concurrent: int | None = Field(None, ge=1)
    """At most this many trials in flight at once (default: as many as the resources allow)."""

    @field_validator("grid")
    @classmethod
    def _check_grid(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            check_grid_key(key)
            if not values:
                raise ValueError(f"grid '{key}' has no values")
        return grid

    @field_validator("address")
    @classmethod
    def _check_address(cls, address: str | None) -> str | None:
        if address is not None:
            check_address(address)
        return address

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, seeds: str | list[int] | None) -> str | list[int] | None:
        if seeds is not None:
            parse_seeds(seeds)
        return seeds


def check_address(address: str) -> None:
    if address != "auto":
        host, sep, port = address.removeprefix("ray://").rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("expected auto, HOST:PORT or ray://HOST:PORT")


def check_grid_key(key: str) -> None:
    parts = key.split(".")
    if len(parts) < 2 or any(not part.strip() for part in parts):
        raise ValueError(f"grid key '{key}': expected section.key, e.g. estimator.lam")
    if key in RESERVED_KEYS:
        raise ValueError(f"grid key '{key}' cannot be swept: {RESERVED_KEYS[key]}")


def parse_seeds(spec: str | Iterable[int]) -> list[int]:
    """``"0-4"`` → ``[0, 1, 2, 3, 4]``; ``"0,2,5"`` → ``[0, 2, 5]``; a list is checked and kept."""
    if isinstance(spec, str):
        seeds: list[int] = []
        for part in spec.split(","):
            part = part.strip()
            match = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if match:
                first, last = int(match[1]), int(match[2])
                if last < first:
                    raise ValueError(f"seed range '{part}' is empty (write low-high, e.g. 0-4)")
                seeds.extend(range(first, last + 1))
            elif re.fullmatch(r"\d+", part):
                seeds.append(int(part))
            else:
                raise ValueError(f"'{part}' is not a seed: expected a range like 0-4 or a list like 0,2,5")
    else:
        seeds = list(spec)
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
            raise ValueError(f"seeds {seeds}: expected non-negative integers")
    if not seeds:
        raise ValueError("no seeds given")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {spec}: a seed is listed twice")
    return seeds


def parse_grid_arg(text: str) -> tuple[str, list[Any]]:
    """``--grid estimator.lam=0.9,0.97,1.0`` → ``("estimator.lam", [0.9, 0.97, 1.0])``.

    Each comma-separated value is read like a ``--set`` value (TOML when it parses, else a string); a
    list-valued setting is written in brackets, ``--grid 'policy.hidden=[64,64],[128,128]'``.
    """
    from ..building.recipe import parse_override

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not raw.strip():
        raise UserError(f"--grid {text}: expected section.key=v1,v2,..., e.g. --grid estimator.lam=0.9,1.0")
    try:
        check_grid_key(key)
    except ValueError as exc:
        raise UserError(f"--grid {text}: {exc}") from None
    return key, [parse_override(f"{key}={item}")[1] for item in _split_top_level(raw)]


def _split_top_level(raw: str) -> list[str]:
    """Split on commas outside brackets and quotes: ``[1,2],[3,4]`` → ``["[1,2]", "[3,4]"]``."""
    items, depth, quote, current = [], 0, "", []
    for char in raw:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    items.append("".join(current).strip())
    if any(not item for item in items):
        raise UserError(f"--grid value list '{raw}' has an empty value")
    return items


@attrs.frozen
class Trial:
    """One grid point × seed: its folder name, its validated recipe and its grid values."""

    name: str
    point: str
    """The grid point's name (the trial name without the seed): seeds of one point share it."""
    values: dict[str, Any]
    seed: int
    recipe: "Recipe"


@attrs.frozen
class SweepPlan:
    """Everything the sweep runs, decided and validated before any trial starts."""

    name: str
    root: Path
    settings: SweepSettings
    grid_keys: list[str]
    trials: list[Trial]


def _value_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(_value_text(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-") or "empty"


def point_name(values: dict[str, Any]) -> str:
    """``{"estimator.lam": 0.9, "estimator.horizon": 16}`` → ``lam-0.9_horizon-16``; filesystem-safe.

    The last part of each key names it, unless two keys share that part (then the full dotted key).
    """
    if not values:
        return "base"
    lasts = [key.split(".")[-1] for key in values]
    parts = []
    for key, value in values.items():
        label = key.split(".")[-1] if lasts.count(key.split(".")[-1]) == 1 else key
        parts.append(f"{label}-{_value_text(value)}")
    return "_".join(parts)


def plan_sweep(recipe_path: str | Path, registry: "Registry", *, grid: Iterable[str] = (),
               seeds: str | None = None, name: str | None = None, address: str | None = None,
               cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
               max_concurrent: int | None = None, overrides: Iterable["Override"] = ()) -> SweepPlan:
    """Read the recipe, merge its ``[sweep]`` table with the flags, and validate every trial's recipe.

    Raises :class:`~mbmix_fw.RecipeError` / :class:`~mbmix_fw.UserError` (one line per problem) before
    anything is written or started.
    """
    import tomllib

    from ..building.build import run_dir_for
    from ..building.recipe import apply_overrides, load_recipe, validate_recipe

    source = str(recipe_path)
    if seeds is not None:
        try:
            parse_seeds(seeds)
        except ValueError as exc:
            raise UserError(f"--seeds {seeds}: {exc}") from None
    base_recipe = load_recipe(recipe_path, registry, overrides)  # the base itself must be valid
    data = apply_overrides(tomllib.loads(Path(recipe_path).read_text(encoding="utf-8")), overrides)
    data.pop("sweep", None)
    table = base_recipe.sweep or SweepSettings()
    flags = {"name": name, "address": address, "cpus_per_trial": cpus_per_trial,
             "gpus_per_trial": gpus_per_trial, "max_concurrent": max_concurrent, "seeds": seeds}
    merged = {**table.model_dump(exclude_unset=True), **{k: v for k, v in flags.items() if v is not None}}
    if address is not None:
        try:
            check_address(address)
        except ValueError as exc:
            raise UserError(f"--address {address}: {exc}") from None
    flag_grid = dict(parse_grid_arg(text) for text in grid)
    merged["grid"] = {**table.grid, **flag_grid}
    try:
        settings = SweepSettings.model_validate(merged)
    except Exception as exc:  # pydantic ValidationError: one line per problem, named like the recipe's
        raise RecipeError([f"{source}: sweep.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                           for e in exc.errors(include_url=False)]) from None  # type: ignore[attr-defined]
    seed_list = parse_seeds(settings.seeds) if settings.seeds is not None else [base_recipe.run.seed]
    sweep_name = settings.name or f"{Path(recipe_path).stem}_sweep"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", sweep_name):
        raise UserError(f"--name {sweep_name!r}: use letters, digits and . _ + - only")
    root = run_dir_for(base_recipe, sweep_name)

    keys = list(settings.grid)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(settings.grid[k] for k in keys))]
    problems: list[str] = []
    trials: list[Trial] = []
    seen: dict[str, dict[str, Any]] = {}
    for values in points:
        point = point_name(values)
        if point in seen:
            raise UserError(f"grid points {seen[point]} and {values} share the folder name '{point}'; "
                            f"use values that differ after replacing unusual characters")
        seen[point] = values
        shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items()) or "base"
        for seed in seed_list:
            trial_name = f"{point}_seed-{seed}"
            trial_data = apply_overrides(data, [*values.items(), ("run.seed", seed),
                                                ("run.out", str(root / trial_name))])
            try:
                recipe = validate_recipe(trial_data, registry, f"{source} [grid {shown}]")
            except RecipeError as exc:
                problems.extend(p for p in exc.problems if p not in problems)
                break  # the seed does not change whether a grid point is valid
            trials.append(Trial(trial_name, point, values, seed, recipe))
    if problems:
        raise RecipeError(problems)
    return SweepPlan(sweep_name, root, settings, keys, trials)


__all__ = ["SweepPlan", "SweepSettings", "Trial", "parse_grid_arg", "parse_seeds", "plan_sweep", "point_name"]
