"""The ``[sweep]`` table's model and the checks it needs: seed ranges, grid keys, Ray addresses.

Why here, in ``contracts/``: the recipe envelope (``building/recipe.py``) validates an optional ``[sweep]``
table, and nothing below ``distributed/`` may import ``distributed/``. The model is pydantic only (no torch,
no Ray); ``distributed/grid.py`` plans a sweep from it.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


__all__ = ["RESERVED_KEYS", "SweepSettings", "check_address", "check_grid_key", "parse_seeds"]
