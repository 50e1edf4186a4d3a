"""A sweep's results per grid point: the IQM of the seeds' scores with its 95 % stratified-bootstrap interval
(the statistics and the score of ``mbmix-fw report --group``), and the final metrics' mean ± std over seeds
(``summary.csv`` and a table)."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import attrs

from ..training.run_folder import write_text_atomic
from ..maths.statistics import CONFIDENCE, ScoreSummary, summarize_scores
from ..training.scores import Score

SUMMARY_CSV = "summary.csv"
METRICS = ("eval/return", "eval/initial_return", "train/return")
BEST_METRIC = "eval/return"
"""Higher is better. The grid point with the best IQM of :data:`SCORE` is marked best."""
SCORE = Score(BEST_METRIC)
"""A trial's score: the mean of its last 3 evaluations (:class:`~mbmix_fw.training.scores.Score`)."""


@attrs.frozen
class PointResult:
    point: str
    values: dict[str, Any]
    seeds: int
    """Trials of this grid point (one per seed), finished or not."""
    finals: list[dict[str, float]]
    """Final metrics of its finished trials."""
    scores: list[float] = attrs.field(factory=list)
    """:data:`SCORE` of each finished trial (NaN for one that diverged)."""

    def score_summary(self) -> ScoreSummary | None:
        """IQM and bootstrap interval of the finite scores (None when there are none)."""
        finite = [x for x in self.scores if math.isfinite(x)]
        return summarize_scores({self.point: finite})[self.point] if finite else None

    def stats(self, metric: str) -> tuple[float, float]:
        """Mean and sample standard deviation (n − 1; NaN for one seed) over the finished seeds."""
        xs = [f[metric] for f in self.finals if metric in f and math.isfinite(f[metric])]
        if not xs:
            return math.nan, math.nan
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
        return mean, std


def best_point(results: list[PointResult]) -> PointResult | None:
    """The grid point with the highest IQM of :data:`SCORE` (None before any trial finished)."""
    scored = [(summary.iqm, r) for r in results if (summary := r.score_summary()) is not None]
    return max(scored, key=lambda pair: pair[0])[1] if scored else None


def write_summary(root: Path, grid_keys: list[str], results: list[PointResult]) -> Path:
    """``root/summary.csv``: one row per grid point — its grid values, seeds finished/total, the IQM of
    :data:`SCORE` with its interval (``score_iqm``, ``score_low``, ``score_high``; empty before a trial
    finished), and ``<metric>_mean`` / ``<metric>_std`` for each of :data:`METRICS` (written atomically)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["point", *grid_keys, "seeds_finished", "seeds", "score_iqm", "score_low", "score_high",
                     *[f"{m}_{s}" for m in METRICS for s in ("mean", "std")]])
    for r in results:
        cells = [json.dumps(r.values[k]) if isinstance(r.values[k], (list, dict)) else r.values[k]
                 for k in grid_keys]
        stats = [repr(v) for m in METRICS for v in r.stats(m)]
        summary = r.score_summary()
        interval = ["", "", ""] if summary is None else [repr(summary.iqm), repr(summary.low), repr(summary.high)]
        writer.writerow([r.point, *cells, len(r.finals), r.seeds, *interval, *stats])
    return write_text_atomic(root / SUMMARY_CSV, text.getvalue())


def format_table(results: list[PointResult]) -> str:
    """The printed table: grid point, seeds finished, the IQM [95 % interval] of :data:`SCORE`, and mean ± std
    of each metric; ``*`` marks the best."""
    best = best_point(results)
    header = ["", "grid point", "seeds", f"IQM [{CONFIDENCE:.0%} CI] of {SCORE}", *METRICS]
    rows = [header]
    for r in results:
        summary = r.score_summary()
        cells = ["-" if summary is None else str(summary)]
        for metric in METRICS:
            mean, std = r.stats(metric)
            cells.append("-" if math.isnan(mean) else f"{mean:.4g}" + ("" if math.isnan(std) else f" ± {std:.3g}"))
        rows.append(["*" if r is best else "", r.point, f"{len(r.finals)}/{r.seeds}", *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
