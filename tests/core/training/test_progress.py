"""What a user sees while training: plain lines off a terminal, honest returns, one numbering, one
skipped-update summary per iteration."""
from __future__ import annotations

import csv
import io
import logging
import math

from mbmix_fw.training.progress import LINE_EVERY_ITERATIONS, LINE_EVERY_SECONDS, SkippedUpdates, TrainingProgress
from mbmix_fw.testing import LinearEnv, tiny_trainer

NAN = math.nan


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def plain(total=25, start=0, clock=None):
    stream = io.StringIO()
    progress = TrainingProgress(total, start, stream=stream, interactive=False, clock=clock or FakeClock())
    return progress, stream


def test_off_a_terminal_one_plain_line_every_n_iterations_and_at_the_end():
    progress, stream = plain(total=25)
    for k in range(1, 26):
        progress.update(k, {"time/steps_per_s": 1234.4}, -812.44, -901.2, 0)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split()[2] for line in lines] == [f"{LINE_EVERY_ITERATIONS}/25", "20/25", "25/25"]
    assert lines[0].startswith("train: iteration 10/25  ret -812.4  eval -901.2  1234 steps/s  ")


def test_an_env_step_budget_re_projects_the_total_and_the_bar_follows():
    progress, stream = plain(total=40)
    progress.retotal(12)  # a budget run finishing sooner than first projected
    progress.update(12, {}, NAN, NAN, 0)
    assert stream.getvalue().startswith("train: iteration 12/12")  # the last line, shown against the new total
    bar_stream = io.StringIO()
    bar = TrainingProgress(40, 0, stream=bar_stream, interactive=True)
    bar.retotal(7)
    bar.update(1, {}, NAN, NAN, 0)
    assert "1/7" in str(bar._bar)
    bar.close()


def test_slow_iterations_still_get_a_line_every_few_seconds():
    clock = FakeClock()
    progress, stream = plain(total=100, clock=clock)
    progress.update(1, {}, NAN, NAN, 0)
    assert stream.getvalue() == ""
    clock.now = LINE_EVERY_SECONDS + 1
    progress.update(2, {}, NAN, NAN, 0)
    progress.update(3, {}, NAN, NAN, 0)  # just printed: not again
    assert stream.getvalue().splitlines() == [f"train: iteration 2/100  {LINE_EVERY_SECONDS + 1:.0f}s"]


def test_no_return_is_shown_until_an_episode_has_finished():
    progress, stream = plain(total=10)
    progress.update(10, {"time/steps_per_s": 50.0}, NAN, NAN, 0)
    assert "nan" not in stream.getvalue() and "ret" not in stream.getvalue()
    assert stream.getvalue().startswith("train: iteration 10/10  50 steps/s")


def test_on_a_terminal_the_bar_shows_the_last_finished_return_and_no_nan():
    stream = io.StringIO()
    progress = TrainingProgress(3, 0, stream=stream, interactive=True)
    progress.update(1, {"time/steps_per_s": 10.0}, NAN, NAN, 0)
    assert "ret" not in str(progress._bar) and "nan" not in str(progress._bar)
    progress.update(2, {"time/steps_per_s": 10.0}, -812.44, NAN, 0)
    assert "ret=-812.4" in str(progress._bar) and "2/3" in str(progress._bar)
    progress.close()


def test_disabled_progress_prints_nothing():
    stream = io.StringIO()
    progress = TrainingProgress(10, 0, enabled=False, stream=stream, interactive=False)
    progress.update(10, {}, -1.0, -1.0, 0)
    assert stream.getvalue() == ""


def test_skipped_updates_are_summarised_once_per_iteration():
    skipped = SkippedUpdates()
    for _ in range(31):
        skipped.record("critic gradient")
    skipped.record("actor loss")
    assert skipped.summary(7, 40) == ("iteration 7: 32 updates skipped (non-finite critic gradient ×31, "
                                      "actor loss ×1); 40 so far")
    assert skipped.summary(8, 40) is None  # the tally starts afresh each iteration


class PoisonedEnv(LinearEnv):
    """Rewards are NaN: every actor and critic update is skipped."""

    def reward(self, state, action, next_state):
        return super().reward(state, action, next_state) * float("nan")


def test_a_diverging_run_logs_one_summary_per_iteration_numbered_like_metrics_csv(tmp_path, caplog):
    trainer = tiny_trainer(PoisonedEnv(num_envs=4, episode_length=8), critic={"iterations": 2, "minibatches": 4},
                           iterations=3, checkpoint_every=50, out_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="mbmix_fw"):
        trainer.train()
    summaries = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(summaries) == 3  # not one per minibatch
    assert [s.split(":")[0] for s in summaries] == ["iteration 1", "iteration 2", "iteration 3"]
    assert "9 updates skipped" in summaries[0]  # 1 actor + 2 passes × 4 minibatches of the critic
    with (tmp_path / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["iteration"] for r in rows] == ["0", "1", "2", "3"]
    assert [float(r["guard/skipped_updates"]) for r in rows[1:]] == [9.0, 18.0, 27.0]
    assert summaries[2].endswith("; 27 so far")
