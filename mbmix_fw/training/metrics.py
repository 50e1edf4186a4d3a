"""Run metrics: kept in memory (and in checkpoints), mirrored to ``metrics.csv`` and TensorBoard."""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from .run_folder import METRICS_CSV, TB_DIR, write_text_atomic


class MetricsLog:
    """One row per iteration, kept in memory (and in checkpoints) and appended to the CSV.

    New rows are appended every ``flush_every`` rows, at checkpoints and at the end, so writing costs
    what the new rows cost. The file is rewritten whole only when a row brings a column the header
    lacks (a handful of times per run: model metrics after warm-up, …) and on resume, where it is
    rewritten from the checkpoint's history — so after a resume it holds exactly the checkpointed rows
    plus the new ones, never rows from the killed continuation."""

    def __init__(self, out_dir: Path | None, flush_every: int = 10):
        self.out_dir, self.flush_every = out_dir, flush_every
        self.history: list[dict[str, float]] = []
        self.initial_eval = float("nan")
        self._writer = None
        self._purge_step: int | None = None
        self._columns: list[str] = []  # the CSV's header as written
        self._written = 0  # history rows already in the CSV

    def set_initial_eval(self, value: float) -> None:
        """The untrained policy's evaluation: row 0 of the CSV, so learning curves start from it."""
        self.initial_eval = value
        self.append(0, {"eval/return": value})

    def append(self, iteration: int, metrics: dict[str, float]) -> None:
        row = {"iteration": float(iteration), **{k: float(v) for k, v in metrics.items()}}
        self.history.append(row)
        for key, value in row.items():
            if key != "iteration" and math.isfinite(value):
                self._scalar(key, value, iteration)
        if len(self.history) % self.flush_every == 0:
            self.flush()

    def latest(self, key: str) -> float:
        """The last non-NaN value of ``key`` (NaN if there is none)."""
        for row in reversed(self.history):
            value = row.get(key, float("nan"))
            if not math.isnan(value):
                return value
        return float("nan")

    def last(self, key: str) -> float:
        """The last value recorded for ``key``, NaN included (NaN if never recorded)."""
        for row in reversed(self.history):
            if key in row:
                return row[key]
        return float("nan")

    def last_row(self, iteration: int) -> dict[str, float]:
        """The metrics logged for ``iteration`` (``iteration`` column left out) if it is the last row and
        a training iteration (≥ 1), else ``{}``: what a scheduler saw after that iteration, for a resume."""
        if iteration < 1 or not self.history or self.history[-1].get("iteration") != float(iteration):
            return {}
        return {k: v for k, v in self.history[-1].items() if k != "iteration"}

    def final_metrics(self) -> dict[str, float]:
        """The last row, with the *true* last evaluation (NaN if it was NaN) and the last finite
        training return (an iteration in which no episode ended has none)."""
        final = dict(self.history[-1]) if self.history else {}
        final["eval/initial_return"] = self.initial_eval
        final["eval/return"] = self.last("eval/return")
        final["train/return"] = self.latest("train/return")
        return final

    def flush(self) -> None:
        if self.out_dir is None or self._written == len(self.history):
            if self._writer is not None:
                self._writer.flush()
            return
        new_rows = self.history[self._written:]
        columns = dict.fromkeys(self._columns or ["iteration"])
        for row in new_rows:
            columns.update(dict.fromkeys(row))
        path = self.out_dir / METRICS_CSV
        if list(columns) != self._columns or not path.exists():
            self._rewrite(list(columns))
        else:
            self._append_lines(path, new_rows)
        self._written = len(self.history)
        if self._writer is not None:
            self._writer.flush()

    def _append_lines(self, path: Path, rows: list[dict[str, float]]) -> None:
        """Append each row as one whole line with one ``write`` call, so a run killed between two rows
        leaves whole rows; one killed inside a call (or a full disk) leaves at most an unterminated last
        line, which the readers (:func:`~mbmix_fw.training.scores.read_metrics_rows`) skip."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            for row in rows:
                text = io.StringIO()
                csv.DictWriter(text, fieldnames=self._columns, restval="").writerow(self._cells(row))
                line = memoryview(text.getvalue().encode("utf-8"))
                while line:  # a short write (a signal, a nearly full disk) goes on where it stopped
                    line = line[os.write(fd, line):]
        finally:
            os.close(fd)

    @staticmethod
    def _cells(row: dict[str, float]) -> dict[str, str | int]:
        return {k: (int(v) if k == "iteration" else repr(v)) for k, v in row.items()}

    def _rewrite(self, columns: list[str]) -> None:
        """Write the whole history atomically (new header, or after a resume)."""
        for row in self.history:
            columns += [k for k in row if k not in columns]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, restval="")
        writer.writeheader()
        for row in self.history:
            writer.writerow(self._cells(row))
        write_text_atomic(self.out_dir / METRICS_CSV, text.getvalue())
        self._columns = columns

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def state_dict(self) -> dict[str, Any]:
        self.flush()
        return {"history": [dict(r) for r in self.history], "initial_eval": self.initial_eval}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [dict(r) for r in state["history"]]
        self.initial_eval = state["initial_eval"]
        self._purge_step = int(self.history[-1]["iteration"]) + 1 if self.history else 0
        if self.out_dir is not None and self.history:  # drop rows the killed continuation appended
            self._rewrite(["iteration"])
        self._written = len(self.history)

    def _scalar(self, key: str, value: float, step: int) -> None:
        if self.out_dir is None:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out_dir / TB_DIR), purge_step=self._purge_step)
        self._writer.add_scalar(key, value, step)
