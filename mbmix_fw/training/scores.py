"""A finished run reduced to one number: its score, read back from ``metrics.csv``.

Shared by ``mbmix-fw report --group`` and the sweep summary, so both compare methods on the same score.
``metrics.csv`` (written by :class:`~mbmix_fw.training.metrics.MetricsLog`) has one row per iteration; a cell
is empty where a metric was not logged, and row 0 is the untrained policy's evaluation. A logged ``nan`` is a
value (a diverged evaluation), not a gap.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

import attrs
import numpy as np

from ..errors import UserError
from .run_folder import METRICS_CSV


def read_metrics_rows(run_dir: str | Path) -> tuple[Path, list[str], list[dict[str, str]]]:
    """``metrics.csv``'s path, columns and raw rows (cells as written; ``""`` where nothing was logged).

    A last row that is unterminated or has fewer cells than the header is left out: it is what a writer
    killed mid-row leaves, and a number cut short is still a number."""
    path = Path(run_dir) / METRICS_CSV
    if not Path(run_dir).is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    if not path.is_file():
        raise UserError(f"{path}: no such file (has the run logged an iteration yet?)")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(io.StringIO(whole_lines(handle.read())))
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    if rows and None in rows[-1].values():  # fewer cells than columns: a row cut short
        rows.pop()
    if not rows or "iteration" not in columns:
        raise UserError(f"{path}: no rows with an 'iteration' column")
    return path, columns, rows


def whole_lines(text: str) -> str:
    """``text`` without an unterminated last line: the part of a row a killed writer (or a full disk) left,
    which would otherwise read as a number (``30,-15`` of ``30,-1528.2,…``)."""
    return text if text.endswith("\n") else text[:text.rfind("\n") + 1]


def to_float(cell: str | None) -> float:
    """A cell as a float; NaN for an empty cell or one that is not a number."""
    try:
        return float(cell) if cell not in (None, "") else math.nan
    except ValueError:
        return math.nan


def missing_column(path: Path, columns: Sequence[str], column: str) -> UserError:
    available = ", ".join(c for c in columns if c != "iteration")
    return UserError(f"{path}: no column '{column}'; available: {available}")


@attrs.frozen
class Score:
    """A run's score: the mean of the last ``last`` logged values of ``metric`` after iteration 0 (all of
    them when the run logged fewer, e.g. a recipe with ``run.eval_every = 0`` evaluates once after training;
    row 0, the untrained policy, never counts). Written ``METRIC[:LAST]`` on the command line.

    Why several evaluations: one evaluation is one draw of the evaluation episodes and of where the policy
    happens to be in its last updates; averaging the last few smooths both."""

    metric: str = "eval/return"
    last: int = 3

    @classmethod
    def parse(cls, text: str) -> "Score":
        metric, _, last = text.rpartition(":") if ":" in text else (text, ":", "3")
        if not metric or not last.isdigit() or int(last) < 1:
            raise UserError(f"--score {text}: expected METRIC[:LAST] with LAST a positive integer "
                            f"(e.g. eval/return:3)")
        return cls(metric, int(last))

    def __str__(self) -> str:
        return f"mean of the last {self.last} '{self.metric}'"

    def of_run(self, run_dir: str | Path) -> float:
        """The score of one run; NaN if a value it averages is NaN (the run diverged). A run with no logged
        value after iteration 0 is a :class:`UserError`."""
        path, columns, rows = read_metrics_rows(run_dir)
        if self.metric not in columns:
            raise missing_column(path, columns, self.metric)
        logged = [to_float(row[self.metric]) for row in rows
                  if row.get(self.metric) not in (None, "") and to_float(row["iteration"]) > 0]
        if not logged:
            raise UserError(f"{path}: no logged '{self.metric}' value after iteration 0 (nothing to score)")
        return float(np.mean(logged[-self.last:]))
