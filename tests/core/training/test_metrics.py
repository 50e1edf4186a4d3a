"""metrics.csv grows by appending (cost per row, not per run length); a new column or a resume rewrites it."""
from __future__ import annotations

import csv

import pytest

from mbmix_fw.errors import UserError
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


# ---- a row cut short (a writer killed mid-row, a full disk) is never read as a number ----
WHOLE = "iteration,eval/return\n0,-1700.0\n10,-1528.5\n20,-1528.0\n30,-1529.0\n"


def test_each_row_is_appended_whole_by_one_write(tmp_path, monkeypatch):
    import mbmix_fw.training.metrics as metrics

    log = MetricsLog(tmp_path, flush_every=1)
    log.append(0, {"loss": 0.0})  # the header: written whole, atomically
    writes = []
    real_write = metrics.os.write
    monkeypatch.setattr(metrics.os, "write", lambda fd, data: (writes.append(bytes(data)), real_write(fd, data))[1])
    log.flush_every = 100
    for i in range(1, 4):
        log.append(i, {"loss": float(i)})
    log.flush()
    assert writes == [b"1,1.0\r\n", b"2,2.0\r\n", b"3,3.0\r\n"]  # csv's line ending, as the rewrite writes it


def test_readers_leave_out_an_unterminated_or_short_last_row(tmp_path):
    from mbmix_fw.commands.report import read_metrics, score_groups
    from mbmix_fw.training.scores import Score

    runs = {}
    for name, tail in {"whole": "", "cut": "40,-15", "short": "40\n", "cut_header": None}.items():
        runs[name] = tmp_path / name
        runs[name].mkdir()
        text = WHOLE + (tail or "") if tail is not None else "iteration,eval/ret"
        (runs[name] / CSV_NAME).write_text(text)
    expected = (-1528.5 - 1528.0 - 1529.0) / 3
    for name in ("whole", "cut", "short"):
        assert Score().of_run(runs[name]) == expected, name  # report --group, sweep summaries
        assert list(read_metrics(runs[name])["iteration"]) == [0, 10, 20, 30], name  # report's curves
    results = score_groups({"g": [runs["whole"], runs["cut"], runs["short"]]})
    assert results[0].scores == [expected] * 3 and results[0].diverged == 0
    with pytest.raises(UserError, match="no rows with an 'iteration' column"):
        Score().of_run(runs["cut_header"])
