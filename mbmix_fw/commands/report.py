"""Learning curves from run folders' ``metrics.csv`` (``mbmix-fw report``).

``metrics.csv`` has one row per iteration, an ``iteration`` column and one column per metric; a cell is
empty (or ``nan``) when that metric was not logged in that iteration (``eval/return`` is only logged on
evaluation iterations), so each curve is drawn through its logged points only.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UserError
from ..training.run_folder import METRICS_CSV

REPORT_PNG = "learning_curves.png"
_SEED_SUFFIX = re.compile(r"[-_.]?(seed|s)[-_]?\d+$")


def read_metrics(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Columns of ``run_dir/metrics.csv`` as float arrays (NaN where a cell is empty or not a number)."""
    path = Path(run_dir) / METRICS_CSV
    if not Path(run_dir).is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    if not path.is_file():
        raise UserError(f"{path}: no such file (has the run logged an iteration yet?)")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
        columns = list(rows[0].keys()) if rows else []
    if not rows or "iteration" not in columns:
        raise UserError(f"{path}: no rows with an 'iteration' column")
    return {col: np.array([_to_float(row.get(col)) for row in rows]) for col in columns}


def _to_float(cell: str | None) -> float:
    try:
        return float(cell) if cell not in (None, "") else math.nan
    except ValueError:
        return math.nan


def expand_run_dirs(run_dirs: Sequence[str | Path]) -> list[Path]:
    """The run folders as given, except that a sweep folder (``sweep.json``, written by ``mbmix-fw sweep``)
    stands for its trials that have logged metrics, so ``report runs/<sweep> --group`` draws the sweep."""
    dirs: list[Path] = []
    for run_dir in map(Path, run_dirs):
        listing = run_dir / "sweep.json"
        if listing.is_file() and not (run_dir / METRICS_CSV).is_file():
            trials = [run_dir / t["name"] for t in json.loads(listing.read_text(encoding="utf-8"))["trials"]]
            logged = [t for t in trials if (t / METRICS_CSV).is_file()]
            if not logged:
                raise UserError(f"{run_dir}: no trial of this sweep has logged metrics yet")
            dirs.extend(logged)
        else:
            dirs.append(run_dir)
    return dirs


def _group_key(run_dir: Path) -> str:
    """Runs of one recipe that differ only in seed (and output folder) share a key."""
    recipe = run_dir / "recipe.json"
    if recipe.is_file():
        data = json.loads(recipe.read_text(encoding="utf-8"))
        run = data.get("run", {})
        run.pop("seed", None)
        run.pop("out", None)
        return json.dumps(data, sort_keys=True)
    return _SEED_SUFFIX.sub("", run_dir.resolve().name)


def _label(run_dirs: Sequence[Path], run_dir: Path) -> str:
    names = [d.resolve().name for d in run_dirs]
    name = run_dir.resolve().name
    return str(run_dir) if names.count(name) > 1 else name


def default_report_path(run_dirs: Sequence[str | Path]) -> Path:
    """Where ``mbmix-fw report`` writes without ``--out``: beside the runs, never in the working directory.

    One run: ``RUN_DIR/learning_curves.png``. Several: ``learning_curves.png`` in the deepest folder that
    holds them all (``runs/sweep/`` for ``runs/sweep/seed0 runs/sweep/seed1``); runs with no common folder
    but the filesystem root need ``--out``.
    """
    dirs = [Path(d) for d in run_dirs]
    for run_dir in dirs:
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: no such run folder")
    if len({d.resolve() for d in dirs}) == 1:
        return dirs[0] / REPORT_PNG
    common = Path(os.path.commonpath([str(d.resolve()) for d in dirs]))
    if common == Path(common.anchor):
        raise UserError(f"the runs share no folder but {common}; say where the plot goes with --out PNG")
    try:
        common = common.relative_to(Path.cwd())  # shown as the user typed the runs, where it can be
    except ValueError:
        pass
    return common / REPORT_PNG


def plot_learning_curves(run_dirs: Sequence[str | Path], out: str | Path, metric: str = "eval/return",
                         x: str = "iteration", group: bool = False) -> Path:
    """Draw ``metric`` against ``x`` for each run into the PNG ``out``; returns its path.

    With ``group=True`` runs that differ only in ``run.seed`` are drawn as their mean with a ±1 standard
    deviation band, over the ``x`` values all of them logged. A sweep folder stands for its trials.
    """
    from matplotlib.figure import Figure  # Agg canvas; no pyplot state, no display needed

    dirs = expand_run_dirs(run_dirs)
    curves = []
    for run_dir in dirs:
        columns = read_metrics(run_dir)
        for needed in (x, metric):
            if needed not in columns:
                available = ", ".join(c for c in columns if c != "iteration")
                raise UserError(f"{run_dir / METRICS_CSV}: no column '{needed}'; available: {available}")
        logged = ~np.isnan(columns[metric]) & ~np.isnan(columns[x])
        curves.append((run_dir, columns[x][logged], columns[metric][logged]))

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    if group:
        groups: dict[str, list[tuple[Path, np.ndarray, np.ndarray]]] = {}
        for curve in curves:
            groups.setdefault(_group_key(curve[0]), []).append(curve)
        for members in groups.values():
            xs = sorted(set.intersection(*(set(c[1].tolist()) for c in members)))
            ys = np.array([[dict(zip(c[1].tolist(), c[2].tolist()))[v] for v in xs] for c in members])
            mean, std = ys.mean(axis=0), ys.std(axis=0)
            label = f"{_SEED_SUFFIX.sub('', members[0][0].resolve().name)} (n={len(members)})"
            (line,) = ax.plot(xs, mean, label=label)
            ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    else:
        for run_dir, xs, ys in curves:
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=_label(dirs, run_dir))
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out
