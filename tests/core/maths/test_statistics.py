"""IQM, stratified-bootstrap intervals and paired differences (mbmix_fw.maths.statistics) against
hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

from mbmix_fw.maths.statistics import (PairedDifference, ScoreSummary, bootstrap_interval, iqm, paired_difference,
                                      summarize_scores)


@pytest.mark.parametrize("scores, expected", [
    ([5.0], 5.0),                              # one score is its own IQM
    ([1.0, 3.0], 2.0),                         # two: each holds half the middle mass
    ([4.0, 1.0, 3.0, 2.0], 2.5),               # n = 4: mean of the middle two (order does not matter)
    ([1.0, 2.0, 3.0, 7.0, 10.0], 3.9),         # (0.75·2 + 3 + 0.75·7) / 2.5: fractional at the quartiles
    ([1, 2, 3, 4, 5, 6, 7, 100], 4.5),         # n = 8: mean of 3..6; the outlier has no weight
    ([0, 0, 0, 100, 100, 100], 50.0),          # (0·1/12 + 0·1/6 + 100·1/6 + 100·1/12) / 0.5
])
def test_iqm_of_known_arrays(scores, expected):
    assert iqm(scores) == pytest.approx(expected, abs=1e-12)


def test_iqm_pools_a_runs_by_tasks_array_and_reduces_along_an_axis():
    table = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [7.0, 70.0], [10.0, 100.0]])
    assert iqm(table) == pytest.approx(iqm(table.reshape(-1)))
    np.testing.assert_allclose(iqm(table, axis=0), [3.9, 39.0])
    with pytest.raises(ValueError, match="no scores"):
        iqm([])


def test_bootstrap_of_a_constant_is_a_point():
    assert bootstrap_interval([3.0] * 7) == (3.0, 3.0)


def test_bootstrap_percentiles_of_two_scores():
    """Resamples of [0, 1] have IQM 0, 0.5, 0.5, 1 with probability 1/4, 1/2, 1/4: the 95 % interval spans
    [0, 1]; a 40 % interval (30th–70th percentile) lies inside the 0.5 block."""
    assert bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_interval([0.0, 1.0], confidence=0.4) == (0.5, 0.5)


def test_bootstrap_is_stratified_by_task():
    """Each task column is constant, so resampling runs within a task never changes the pooled IQM (50); an
    unstratified resample of the 6 pooled scores would spread."""
    table = np.array([[0.0, 100.0]] * 3)
    assert bootstrap_interval(table) == (50.0, 50.0)
    assert bootstrap_interval(table.reshape(-1)) != (50.0, 50.0)


def test_bootstrap_interval_covers_the_iqm_and_is_seeded():
    scores = np.random.default_rng(1).normal(10.0, 3.0, size=10)
    low, high = bootstrap_interval(scores)
    assert low < iqm(scores) < high
    assert bootstrap_interval(scores, seed=4) == bootstrap_interval(scores, seed=4)
    assert bootstrap_interval(scores, seed=4) != bootstrap_interval(scores, seed=5)
    narrower = bootstrap_interval(scores, confidence=0.5)
    assert low < narrower[0] < narrower[1] < high


def test_summarize_scores_per_group():
    summary = summarize_scores({"shac": [1.0, 2.0, 3.0, 7.0, 10.0], "flat": [2.0, 2.0, 2.0]})
    assert summary["shac"].iqm == pytest.approx(3.9) and summary["shac"].runs == 5
    assert summary["shac"].low < 3.9 < summary["shac"].high
    assert summary["flat"] == ScoreSummary(2.0, 2.0, 2.0, runs=3)
    # a group's interval does not depend on its neighbours
    assert summarize_scores({"shac": [1.0, 2.0, 3.0, 7.0, 10.0]})["shac"] == summary["shac"]
    assert str(summary["flat"]) == "2 [2, 2]"


@pytest.mark.parametrize("bad, message", [([], "non-empty"), ([1.0, float("nan")], "finite")])
def test_summarize_scores_names_a_bad_group(bad, message):
    with pytest.raises(ValueError, match=f"group 'mix': .*{message}"):
        summarize_scores({"shac": [1.0], "mix": bad})


def test_grouped_curves_use_shared_x_or_interpolate_where_runs_differ():
    """Iterations and env steps are shared by every run of a group; wall time is not, so each curve is then
    interpolated on one grid and the group mean exists wherever at least half the runs reach."""
    import numpy as np

    from mbmix_fw.commands.report import _group_grid

    shared = [(None, np.array([0.0, 10.0, 20.0]), np.array([1.0, 2.0, 3.0])),
              (None, np.array([0.0, 10.0, 20.0]), np.array([3.0, 4.0, 5.0]))]
    xs, ys = _group_grid(shared)
    assert xs.tolist() == [0.0, 10.0, 20.0] and ys.tolist() == [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]
    timed = [(None, np.array([1.0, 3.0]), np.array([0.0, 2.0])), (None, np.array([2.0, 5.0]), np.array([0.0, 3.0]))]
    xs, ys = _group_grid(timed)
    assert xs[0] == 1.0 and xs[-1] == 5.0 and len(xs) == 50
    at_2 = int(np.argmax(xs >= 2.0))  # the first grid point both runs reach
    np.testing.assert_allclose(ys[:, at_2], [xs[at_2] - 1.0, xs[at_2] - 2.0], atol=1e-12)  # both lines, exactly
    assert np.isnan(ys[0, -1]) and not np.isnan(ys[1, -1])  # run 0 stopped at 3: half the runs still count
    # env steps of adaptive-horizon runs: they share only their first and last values; the curve is interpolated
    adaptive = [(None, np.array([64.0, 160.0, 400.0, 512.0]), np.array([0.0, 1.0, 4.0, 4.0])),
                (None, np.array([64.0, 96.0, 256.0, 512.0]), np.array([0.0, 2.0, 3.0, 5.0]))]
    xs, ys = _group_grid(adaptive)
    assert len(xs) == 50 and xs[0] == 64.0 and xs[-1] == 512.0
    np.testing.assert_allclose(ys[0], np.interp(xs, adaptive[0][1], adaptive[0][2]))


def test_paired_difference_uses_only_the_seeds_both_ran():
    """Differences 1, -1, 3, 5 (seed 9 has no partner): mean 2, sample s.d. sqrt(20/3), 3 of 4 above."""
    scores = {0: 11.0, 1: 10.0, 2: 14.0, 3: 16.0, 9: 100.0}
    base = {0: 10.0, 1: 11.0, 2: 11.0, 3: 11.0, 7: -50.0}
    difference = paired_difference(scores, base)
    assert (difference.mean, difference.above, difference.pairs) == (pytest.approx(2.0), 3, 4)
    assert difference.stderr == pytest.approx((20 / 3) ** 0.5 / 2)
    assert str(difference) == "+2.00 ± 1.29 (3/4)"


def test_paired_difference_without_common_seeds_or_with_one_pair():
    empty = paired_difference({0: 1.0}, {1: 1.0})
    assert empty.pairs == 0 and np.isnan(empty.mean) and np.isnan(empty.stderr) and str(empty) == "—"
    one = paired_difference({4: 3.0}, {4: 1.0})
    assert (one.mean, one.above, one.pairs) == (2.0, 1, 1) and np.isnan(one.stderr)
    assert isinstance(one, PairedDifference)
