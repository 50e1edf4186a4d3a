"""A sweep's results: final metrics per grid point, mean ± std over seeds (``summary.csv`` and a table)."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import attrs

from ..training.run_folder import write_text_atomic

SUMMARY_CSV = "summary.csv"
METRICS = ("eval/return", "eval/initial_return", "train/return")
BEST_METRIC = "eval/return"
"""Higher is better; the progress line and the table mark the grid point with the best mean."""


@attrs.frozen
class PointResult:
    point: str
    values: dict[str, Any]
    seeds: int
    """Trials of this grid point (one per seed), finished or not."""
    finals: list[dict[str, float]]
    """Final metrics of its finished trials."""

    def stats(self, metric: str) -> tuple[float, float]:
        """Mean and sample standard deviation (n − 1; NaN for one seed) over the finished seeds."""
        xs = [f[metric] for f in self.finals if metric in f and math.isfinite(f[metric])]
        if not xs:
            return math.nan, math.nan
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
        return mean, std


def best_point(results: list[PointResult]) -> PointResult | None:
    scored = [r for r in results if math.isfinite(r.stats(BEST_METRIC)[0])]
    return max(scored, key=lambda r: r.stats(BEST_METRIC)[0]) if scored else None


def write_summary(root: Path, grid_keys: list[str], results: list[PointResult]) -> Path:
    """``root/summary.csv``: one row per grid point — its grid values, seeds finished/total, and
    ``<metric>_mean`` / ``<metric>_std`` for each of :data:`METRICS` (written atomically)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["point", *grid_keys, "seeds_finished", "seeds",
                     *[f"{m}_{s}" for m in METRICS for s in ("mean", "std")]])
    for r in results:
        cells = [json.dumps(r.values[k]) if isinstance(r.values[k], (list, dict)) else r.values[k]
                 for k in grid_keys]
        stats = [repr(v) for m in METRICS for v in r.stats(m)]
        writer.writerow([r.point, *cells, len(r.finals), r.seeds, *stats])
    return write_text_atomic(root / SUMMARY_CSV, text.getvalue())


def format_table(results: list[PointResult]) -> str:
    """The printed table: grid point, seeds finished, and mean ± std of each metric; ``*`` marks the best."""
    best = best_point(results)
    header = ["", "grid point", "seeds", *METRICS]
    rows = [header]
    for r in results:
        cells = []
        for metric in METRICS:
            mean, std = r.stats(metric)
            cells.append("-" if math.isnan(mean) else f"{mean:.4g}" + ("" if math.isnan(std) else f" ± {std:.3g}"))
        rows.append(["*" if r is best else "", r.point, f"{len(r.finals)}/{r.seeds}", *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
