"""metrics.csv grows by appending (cost per row, not per run length); a new column or a resume rewrites it."""
from __future__ import annotations

import csv

from mbmix_fw.training.metrics import MetricsLog
from mbmix_fw.training.run_folder import METRICS_CSV as CSV_NAME


def rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_rows_are_appended_not_rewritten(tmp_path):
    log = MetricsLog(tmp_path, flush_every=2)
    for i in range(2):
        log.append(i, {"loss": float(i)})
    path = tmp_path / CSV_NAME
    path.write_text(path.read_text().replace("0,0.0", "0,99.0"))  # mark the written rows
    for i in range(2, 4):
        log.append(i, {"loss": float(i)})
    assert [r["loss"] for r in rows(path)] == ["99.0", "1.0", "2.0", "3.0"]  # old rows untouched
    log.append(4, {"loss": 4.0, "new": 1.0})  # a new column: one rewrite from the history
    log.flush()
    assert [r["loss"] for r in rows(path)] == ["0.0", "1.0", "2.0", "3.0", "4.0"]
    assert [r["new"] for r in rows(path)] == ["", "", "", "", "1.0"]


def test_resume_truncates_rows_beyond_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path, flush_every=1)
    for i in range(3):
        log.append(i, {"loss": float(i)})
    saved = log.state_dict()
    for i in range(3, 6):  # the killed continuation
        log.append(i, {"loss": float(i)})
    resumed = MetricsLog(tmp_path, flush_every=1)
    resumed.load_state_dict(saved)
    assert [r["loss"] for r in rows(tmp_path / CSV_NAME)] == ["0.0", "1.0", "2.0"]  # at once, before any row
    resumed.append(3, {"loss": 30.0})
    assert [r["loss"] for r in rows(tmp_path / CSV_NAME)] == ["0.0", "1.0", "2.0", "30.0"]
