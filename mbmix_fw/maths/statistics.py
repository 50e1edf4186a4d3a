"""How good is a method, over seeds: interquartile mean and a stratified-bootstrap 95 % interval.

The statistics of Agarwal et al. (2021), "Deep RL at the edge of the statistical precipice" (the `rliable`
library), written here in numpy alone so a report needs no extra dependency:

- **IQM** (:func:`iqm`): the mean of the middle 50 % of the scores. Robust to one diverged or lucky seed (unlike
  the mean) and uses more of the data than the median. Each of the ``n`` sorted scores holds probability mass
  ``1/n``; the IQM is the mean over the mass between the 25th and 75th percentile, so a score that straddles a
  quartile counts with the fraction of its mass inside (for ``[1, 2, 3, 7, 10]``: ``(0.75·2 + 3 + 0.75·7) /
  2.5 = 3.9``). When ``n`` is a multiple of 4 this is exactly rliable's ``scipy.stats.trim_mean(x, 0.25)``;
  otherwise rliable drops ``floor(n/4)`` whole scores at each end (4.0 for the example) — the fractional form
  is continuous in ``n`` and is what "the middle 50 %" means for the empirical distribution.
- **Stratified bootstrap percentile interval** (:func:`bootstrap_interval`): resample the runs with
  replacement *within each task* (a column of a ``(runs, tasks)`` array; one task for a flat list), recompute
  the statistic on each of ``resamples`` resampled sets, and report the ``(1 - confidence)/2`` and
  ``(1 + confidence)/2`` percentiles. Seeded, so a report is reproducible.

:func:`summarize_scores` applies both to a ``{group: scores}`` mapping; it is what ``mbmix-fw report --group``
and the sweep summary print, and what a benchmark script calls. :func:`paired_difference` compares two methods
run on the same seeds (a method and its ablation twin share every random number up to where they differ), which
sees far smaller effects than two independent IQMs do.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import attrs
import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95


def _quartile_weights(n: int) -> np.ndarray:
    """Weight of each of ``n`` sorted scores in the IQM (sums to 1): its mass inside [0.25, 0.75], doubled."""
    edges = np.arange(n + 1) / n
    inside = np.clip(np.minimum(edges[1:], 0.75) - np.maximum(edges[:-1], 0.25), 0.0, None)
    return inside / 0.5


def iqm(scores: Sequence[float] | np.ndarray, axis: int | None = None) -> float | np.ndarray:
    """Interquartile mean of ``scores`` (fractional weighting at the quartiles, see the module docstring).

    ``axis=None`` pools every score (a ``(runs, tasks)`` array is one set of ``runs·tasks`` scores, as in
    rliable); an integer axis returns one IQM per slice along the other axes.
    """
    x = np.asarray(scores, dtype=np.float64)
    if axis is None:
        x, axis = x.reshape(-1), 0
    if x.shape[axis] == 0:
        raise ValueError("the IQM of no scores is undefined")
    ordered = np.moveaxis(np.sort(x, axis=axis), axis, -1)
    result = ordered @ _quartile_weights(ordered.shape[-1])
    return float(result) if result.ndim == 0 else result


def _as_runs_by_tasks(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty list (runs) or a (runs, tasks) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("scores must be finite (a diverged run has no score; leave it out and say so)")
    return x


def bootstrap_interval(scores: Sequence[float] | np.ndarray,
                       statistic: Callable[[np.ndarray], np.ndarray] | None = None, *,
                       resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                       seed: int = 0) -> tuple[float, float]:
    """Stratified-bootstrap percentile interval of ``statistic`` (default: the IQM) over ``scores``.

    ``scores``: a list of per-run scores (one task) or a ``(runs, tasks)`` array; runs are resampled with
    replacement independently within each task column. ``statistic`` maps a ``(resamples, runs·tasks)``
    array to ``(resamples,)`` values (default ``iqm(·, axis=1)``). Returns ``(low, high)``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    x = _as_runs_by_tasks(scores)
    runs, tasks = x.shape
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, runs, size=(resamples, runs, tasks))
    resampled = x[picks, np.arange(tasks)].reshape(resamples, -1)  # row picks[r, i, t] of column t
    values = statistic(resampled) if statistic is not None else iqm(resampled, axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


@attrs.frozen
class ScoreSummary:
    """One group's IQM and its bootstrap interval, over ``runs`` runs (× ``tasks`` tasks)."""

    iqm: float
    low: float
    high: float
    runs: int
    tasks: int = 1

    def __str__(self) -> str:
        return f"{self.iqm:.4g} [{self.low:.4g}, {self.high:.4g}]"


def summarize_scores(scores: Mapping[str, Sequence[float] | np.ndarray], *, resamples: int = RESAMPLES,
                     confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, ScoreSummary]:
    """Per group: the IQM of its scores and the stratified-bootstrap ``confidence`` interval of the IQM.

    ``scores`` maps a group name (a method, a setting) to its per-seed scores — a list, or a ``(runs,
    tasks)`` array when one group covers several tasks. Each group is resampled with the same ``seed``, so the
    result does not depend on which other groups are passed. Raises ``ValueError`` for an empty or
    non-finite group, naming it.
    """
    summaries = {}
    for name, group in scores.items():
        try:
            x = _as_runs_by_tasks(group)
            low, high = bootstrap_interval(x, resamples=resamples, confidence=confidence, seed=seed)
        except ValueError as error:
            raise ValueError(f"group {name!r}: {error}") from None
        summaries[name] = ScoreSummary(iqm(x), low, high, runs=x.shape[0], tasks=x.shape[1])
    return summaries


@attrs.frozen
class PairedDifference:
    """``method − base`` over the seeds both ran: the mean, its standard error, the seeds where the method
    is above, and the number of pairs."""

    mean: float
    stderr: float
    above: int
    pairs: int

    def __str__(self) -> str:
        return f"{self.mean:+.2f} ± {self.stderr:.2f} ({self.above}/{self.pairs})" if self.pairs else "—"


def paired_difference(scores: Mapping[object, float], base: Mapping[object, float]) -> PairedDifference:
    """The per-seed difference ``scores[seed] − base[seed]`` over the seeds in both mappings (``{seed:
    score}``): its mean, standard error (sample s.d. / √pairs; NaN for one pair) and how many are above 0.
    No common seed gives NaN mean and error and 0 pairs, so a table can print "—" instead of failing."""
    diffs = [float(scores[seed]) - float(base[seed]) for seed in scores if seed in base]
    if not diffs:
        return PairedDifference(float("nan"), float("nan"), 0, 0)
    n = len(diffs)
    mean = sum(diffs) / n
    stderr = float(np.std(diffs, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return PairedDifference(mean, stderr, sum(d > 0 for d in diffs), n)
