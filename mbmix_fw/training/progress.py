"""What a user sees while a run trains: a progress bar on a terminal, plain log lines elsewhere.

One numbering everywhere: *iteration k* is the state after k policy updates, exactly the ``iteration``
column of ``metrics.csv`` (row 0 is the untrained policy's evaluation). The bar's counter, the plain
log lines and the skipped-update summary all use it.

- **On a terminal** (stderr is a TTY): a tqdm bar whose postfix shows the last finished training
  episode's return (``ret``; absent until an episode has finished), the last evaluation (``eval``) and
  the simulator throughput (``sps``).
- **Anywhere else** (a log file, CI, ``nohup``): no ``\\r`` updates. One plain line per
  ``LINE_EVERY_ITERATIONS`` iterations, or sooner when ``LINE_EVERY_SECONDS`` have passed since the
  previous line (slow iterations), plus one for the last iteration::

      train: iteration 20/150  ret -812.4  eval -901.2  2310 steps/s  41s

- **Skipped updates** (non-finite loss or gradient) are summarised in one warning per iteration, e.g.
  ``iteration 7: 32 updates skipped (critic gradient ×31, actor loss ×1); 40 so far``, instead of one line
  per critic minibatch. This is logged whether or not progress is shown.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from collections import Counter
from typing import Any, Callable, Mapping, TextIO

log = logging.getLogger("mbmix_fw")

LINE_EVERY_ITERATIONS = 10
LINE_EVERY_SECONDS = 30.0


class SkippedUpdates:
    """Counts what went non-finite during one iteration: updates skipped, by what was skipped
    (``"critic gradient"``), and simulator transitions masked out of the critic, buffer and normaliser."""

    def __init__(self) -> None:
        self._this_iteration: Counter[str] = Counter()
        self._masked = 0
        self._cut = 0

    def record(self, what: str, count: int = 1) -> None:
        if count:
            self._this_iteration[what] += count

    def mask(self, transitions: int) -> None:
        self._masked += transitions

    def cut(self, rows: int) -> None:
        """Action-gradient rows zeroed because they came back non-finite (the other rows still trained)."""
        self._cut += rows

    def summary(self, iteration: int, so_far: int) -> str | None:
        """The iteration's one-line summary (``None`` when nothing went non-finite); resets the tally."""
        if not self._this_iteration and not self._masked and not self._cut:
            return None
        count = sum(self._this_iteration.values())
        noun = "update" if count == 1 else "updates"
        line = f"iteration {iteration}: "
        if self._masked:
            line += f"{self._masked} non-finite transition(s) masked; "
        if self._cut:
            line += f"{self._cut} non-finite action-gradient row(s) cut; "
        line += f"{count} {noun} skipped"
        if count:
            line += " (non-finite " + ", ".join(f"{what} ×{n}" for what, n in self._this_iteration.most_common()) + ")"
        self._this_iteration.clear()
        self._masked = self._cut = 0
        return f"{line}; {so_far} so far"


def _format(value: float, spec: str) -> str | None:
    return None if value is None or not math.isfinite(value) else format(value, spec)


class TrainingProgress:
    """Shows a run's progress: a tqdm bar when ``stream`` is a terminal, else plain lines.

    ``enabled=False`` (``--no-progress``) shows nothing but still logs skipped-update summaries.
    ``interactive`` overrides the terminal check (tests); ``clock`` is ``time.monotonic``.
    """

    def __init__(self, total: int, start: int, *, enabled: bool = True, stream: TextIO | None = None,
                 interactive: bool | None = None, skipped: SkippedUpdates | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.enabled = total, enabled
        self.stream = stream if stream is not None else sys.stderr
        if interactive is None:
            isatty = getattr(self.stream, "isatty", None)
            interactive = bool(isatty and isatty())
        self.interactive = interactive
        self.skipped = skipped if skipped is not None else SkippedUpdates()
        self._clock = clock
        self._started = self._last_line = clock()
        self._bar: Any = None
        if enabled and interactive:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=start, desc="train", unit="it", dynamic_ncols=True,
                             file=self.stream)

    def retotal(self, total: int) -> None:
        """A new expected iteration count (an env-step budget projects it anew after each iteration)."""
        if total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total

    def update(self, iteration: int, metrics: Mapping[str, float], last_return: float,
               last_eval: float, skipped_so_far: int) -> None:
        """After iteration ``iteration`` (k updates done): ``last_return`` is the latest finished training
        episode's mean return and ``last_eval`` the latest evaluation (NaN when there is none yet)."""
        summary = self.skipped.summary(iteration, skipped_so_far)
        if summary is not None:
            if self._bar is not None:
                self._bar.clear()
            log.warning(summary)
        if not self.enabled:
            return
        fields = {
            "ret": _format(last_return, ".1f"),
            "eval": _format(last_eval, ".1f"),
            "sps": _format(metrics.get("time/steps_per_s", math.nan), ".0f"),
        }
        shown = {k: v for k, v in fields.items() if v is not None}
        if self._bar is not None:
            self._bar.set_postfix(shown, refresh=False)
            self._bar.update(1)  # redraws, with the new postfix
            return
        now = self._clock()
        due = (iteration % LINE_EVERY_ITERATIONS == 0 or iteration == self.total
               or now - self._last_line >= LINE_EVERY_SECONDS)
        if due:
            self._last_line = now
            parts = [f"train: iteration {iteration}/{self.total}"]
            parts += [f"ret {shown['ret']}"] if "ret" in shown else []
            parts += [f"eval {shown['eval']}"] if "eval" in shown else []
            parts += [f"{shown['sps']} steps/s"] if "sps" in shown else []
            parts.append(f"{now - self._started:.0f}s")
            print("  ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
