"""Sweep planning: the ``[sweep]`` table, seed ranges, grid points and the validated recipe of every trial.

Torch-free and Ray-free. The ``[sweep]`` table's model (:class:`SweepSettings`) lives in
``contracts/sweep_settings.py`` because the recipe envelope validates it; the planner
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

from ..contracts.sweep_settings import SweepSettings, check_address, check_grid_key, parse_seeds
from ..errors import RecipeError, UserError

if TYPE_CHECKING:
    from ..building.recipe import Override, Recipe
    from ..building.registry import Registry


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
