"""Run metrics: kept in memory (and in checkpoints), mirrored to ``metrics.csv`` and TensorBoard."""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

CSV_NAME = "metrics.csv"
TB_DIR = "tb"


class MetricsLog:
    """One row per iteration. The CSV is rewritten atomically from the history (every ``flush_every``
    rows, at checkpoints and at the end), so after a resume it holds exactly the checkpointed rows plus
    the new ones — never rows from the killed continuation."""

    def __init__(self, out_dir: Path | None, flush_every: int = 10):
        self.out_dir, self.flush_every = out_dir, flush_every
        self.history: list[dict[str, float]] = []
        self.initial_eval = float("nan")
        self._writer = None
        self._purge_step: int | None = None

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
        for row in reversed(self.history):
            value = row.get(key, float("nan"))
            if not math.isnan(value):
                return value
        return float("nan")

    def final_metrics(self) -> dict[str, float]:
        final = dict(self.history[-1]) if self.history else {}
        final["eval/initial_return"] = self.initial_eval
        final["eval/return"] = self.latest("eval/return")
        final["train/return"] = self.latest("train/return")
        return final

    def flush(self) -> None:
        if self.out_dir is None or not self.history:
            return
        columns: dict[str, None] = {"iteration": None}
        for row in self.history:
            columns.update(dict.fromkeys(row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(columns), restval="")
        writer.writeheader()
        for row in self.history:
            writer.writerow({k: (int(v) if k == "iteration" else repr(v)) for k, v in row.items()})
        path = self.out_dir / CSV_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".csv.tmp")
        tmp.write_text(text.getvalue())
        os.replace(tmp, path)
        if self._writer is not None:
            self._writer.flush()

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
        self.flush()

    def _scalar(self, key: str, value: float, step: int) -> None:
        if self.out_dir is None:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out_dir / TB_DIR), purge_step=self._purge_step)
        self._writer.add_scalar(key, value, step)
