"""Learning curves and per-group scores from run folders' ``metrics.csv`` (``mbmix-fw report``).

``metrics.csv`` has one row per iteration, an ``iteration`` column and one column per metric; a cell is
empty when that metric was not logged in that iteration (``eval/return`` is only logged on evaluation
iterations; row 0 is the untrained policy's evaluation), so each curve is drawn through its logged points
only. A logged ``nan`` is a value (a diverged evaluation), not a gap.

With groups (``--group``) each run is also reduced to one **score** (:class:`Score`, default: the mean of its
last 3 evaluations after training) and each group to the IQM of its runs' scores with a 95 % stratified-
bootstrap interval (:func:`mbmix_fw.maths.statistics.summarize_scores`).
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
from pathlib import Path
from typing import Sequence

import attrs
import numpy as np

from ..errors import UserError
from ..maths.statistics import CONFIDENCE, ScoreSummary, summarize_scores
from ..training.scores import METRICS_CSV, Score, missing_column, read_metrics_rows, to_float

REPORT_PNG = "learning_curves.png"
_SEED_SUFFIX = re.compile(r"[-_.]?(seed|s)[-_]?\d+$")


def read_metrics(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Columns of ``run_dir/metrics.csv`` as float arrays (NaN where a cell is empty or not a number)."""
    _, columns, rows = read_metrics_rows(run_dir)
    return {col: np.array([to_float(row.get(col)) for row in rows]) for col in columns}


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


def is_named_group(argument: str) -> bool:
    """``NAME=RUN...`` (and not a folder whose name happens to contain ``=``)."""
    return "=" in argument and not Path(argument).exists()


def resolve_groups(arguments: Sequence[str]) -> dict[str, list[Path]]:
    """The report's groups from its positional arguments.

    ``NAME=RUN[,RUN...]`` names a group; each ``RUN`` is a run folder, a sweep folder (its trials) or a glob
    (``shac=runs/shac_s*``; the shell leaves such an argument alone, so quoting is optional). A plain run or
    sweep folder joins the automatic groups: runs whose ``recipe.json`` differ only in ``run.seed`` (a sweep's
    grid points), named after the first run's folder without its seed suffix.
    """
    groups: dict[str, list[Path]] = {}
    plain: list[str] = []
    for argument in arguments:
        if not is_named_group(argument):
            plain.append(argument)
            continue
        name, _, runs = argument.partition("=")
        if not name or not runs:
            raise UserError(f"{argument}: expected NAME=RUN_DIR[,RUN_DIR...] or a run folder")
        if name in groups:
            raise UserError(f"{argument}: group '{name}' is named twice")
        members: list[str] = []
        for pattern in runs.split(","):
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            if not matches:
                raise UserError(f"{pattern}: matches no run folder (group '{name}')")
            members += matches
        groups[name] = expand_run_dirs(members)
    automatic: dict[str, list[Path]] = {}
    for run_dir in expand_run_dirs(plain) if plain else []:
        automatic.setdefault(_group_key(run_dir), []).append(run_dir)
    for members in automatic.values():
        name = base = _SEED_SUFFIX.sub("", members[0].resolve().name)
        suffix = 2
        while name in groups:
            name, suffix = f"{base}-{suffix}", suffix + 1
        groups[name] = members
    return groups


@attrs.frozen
class GroupResult:
    """One group's runs, their scores, and the IQM with its interval over the finite ones."""

    name: str
    runs: list[Path]
    scores: list[float]
    summary: ScoreSummary | None
    """None when no run has a finite score."""

    @property
    def diverged(self) -> int:
        return sum(not math.isfinite(x) for x in self.scores)


def score_groups(groups: dict[str, list[Path]], score: Score = Score(), seed: int = 0) -> list[GroupResult]:
    """Each group's scores and :func:`~mbmix_fw.maths.statistics.summarize_scores` of the finite ones; a run
    whose score is NaN (it diverged) is left out of the statistic and counted, never silently dropped."""
    results = []
    for name, runs in groups.items():
        scores = [score.of_run(run) for run in runs]
        finite = [x for x in scores if math.isfinite(x)]
        summary = summarize_scores({name: finite}, seed=seed)[name] if finite else None
        results.append(GroupResult(name, runs, scores, summary))
    return results


def format_group_table(results: Sequence[GroupResult], score: Score = Score()) -> str:
    """The printed table: group, runs, diverged runs, IQM and its 95 % interval of the score."""
    header = ["group", "runs", "diverged", f"IQM [{CONFIDENCE:.0%} CI] of {score}"]
    rows = [header] + [[r.name, str(len(r.runs)), str(r.diverged), "-" if r.summary is None else str(r.summary)]
                       for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _curve(run_dir: Path, metric: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    columns = read_metrics(run_dir)
    for needed in (x, metric):
        if needed not in columns:
            raise missing_column(run_dir / METRICS_CSV, list(columns), needed)
    logged = ~np.isnan(columns[metric]) & ~np.isnan(columns[x])
    return columns[x][logged], columns[metric][logged]


def _group_grid(members) -> tuple[np.ndarray, np.ndarray]:
    """A group's curves on common x values when every run logged the same ones (iterations; env steps of
    fixed-H runs). Otherwise (wall time; env steps of runs whose window length adapts, or runs that stopped
    early) each curve is interpolated on 50 points spanning all runs' x range, NaN outside its own, and only
    points that at least half the runs reach are kept: the intersection of such runs' x values is a few
    points (an adaptive-H group shares only its first and last env steps), a straight line that hides the
    curve."""
    logged = [set(c[1].tolist()) for c in members]
    shared = sorted(set.intersection(*logged))
    if len(members) == 1 or all(len(x) == len(shared) for x in logged):
        return np.array(shared), np.array([[dict(zip(c[1].tolist(), c[2].tolist()))[v] for v in shared]
                                           for c in members])
    grid = np.linspace(min(float(c[1].min()) for c in members), max(float(c[1].max()) for c in members), 50)
    ys = np.array([np.where((grid >= c[1].min()) & (grid <= c[1].max()), np.interp(grid, c[1], c[2]), np.nan)
                   for c in members])
    keep = (~np.isnan(ys)).sum(axis=0) * 2 >= len(members)
    return grid[keep], ys[:, keep]


def _draw_intervals(ax, results: Sequence[GroupResult], score: Score) -> None:
    """rliable-style interval plot: one row per group, a bar over the interval and a tick at the IQM."""
    shown = [r for r in results if r.summary is not None]
    for row, result in enumerate(shown):
        s = result.summary
        ax.barh(row, s.high - s.low, left=s.low, height=0.6, alpha=0.35, color=f"C{results.index(result)}")
        ax.plot([s.iqm, s.iqm], [row - 0.3, row + 0.3], color="black", linewidth=2)
    ax.set_yticks(range(len(shown)), [f"{r.name} (n={len(r.runs) - r.diverged})" for r in shown])
    ax.invert_yaxis()
    ax.set_xlabel(f"IQM of the {score} ({CONFIDENCE:.0%} CI)")
    ax.grid(alpha=0.3, axis="x")


def write_report(arguments: Sequence[str | Path], out: str | Path | None = None, *, metric: str = "eval/return",
                 x: str = "iteration", group: bool = False, score: Score = Score(),
                 seed: int = 0) -> tuple[Path, list[GroupResult]]:
    """Draw ``metric`` against ``x`` for each run into the PNG ``out`` (default: :func:`default_report_path`);
    returns its path and, for a grouped report, the groups' scores (else an empty list).

    ``arguments`` are run folders, sweep folders (their trials) and ``NAME=RUN,...`` groups
    (:func:`resolve_groups`); a named group makes the report grouped. Grouped, each group is drawn as its mean
    with a ±1 standard deviation band over the ``x`` values all its runs logged, and beside it the IQM of
    each group's :class:`Score` with its stratified-bootstrap interval. Every input is checked before anything
    is written.
    """
    from matplotlib.figure import Figure  # Agg canvas; no pyplot state, no display needed

    arguments = [str(a) for a in arguments]
    group = group or any(is_named_group(a) for a in arguments)
    if group:
        groups = resolve_groups(arguments)
        curves = {name: [(d, *_curve(d, metric, x)) for d in runs] for name, runs in groups.items()}
        results = score_groups(groups, score, seed)
        dirs = [d for runs in groups.values() for d in runs]
    else:
        dirs = expand_run_dirs(arguments)
        curves = {_label(dirs, d): [(d, *_curve(d, metric, x))] for d in dirs}
        results = []
    out = Path(out) if out is not None else default_report_path(dirs)

    fig = Figure(figsize=(12, 4.5) if group else (7, 4.5), layout="constrained")
    ax = fig.subplots(1, 2, width_ratios=[3, 2])[0] if group else fig.subplots()
    for name, members in curves.items():
        if group:
            xs, ys = _group_grid(members)
            mean, std = np.nanmean(ys, axis=0), np.nanstd(ys, axis=0)
            (line,) = ax.plot(xs, mean, label=f"{name} (n={len(members)})")
            ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        else:
            _, xs, ys = members[0]
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=name)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if group:
        _draw_intervals(fig.axes[1], results, score)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out, results
