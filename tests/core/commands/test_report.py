"""``mbmix-fw report``: learning curves, seed groups scored by IQM with bootstrap intervals, and its
one-line errors (on ``metrics.csv`` files written here, so no training is needed)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mbmix_fw.commands.cli import main
from mbmix_fw.testing import user_error_lines as error_lines

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fake_run(folder: Path, seed: int, returns: list[float | None], recipe: dict | None = None,
              initial: float | None = None) -> Path:
    """``metrics.csv`` with ``eval/return`` = ``returns`` at iterations 1, 2, … (and ``initial`` at 0)."""
    folder.mkdir(parents=True)
    with (folder / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["iteration", "train/return", "eval/return"])
        if initial is not None:
            writer.writerow([0, "", initial])
        for i, value in enumerate(returns, start=1):
            writer.writerow([i, -100 + i + seed, "" if value is None else value])
    if recipe is not None:
        (folder / "recipe.json").write_text(json.dumps({**recipe, "run": {"seed": seed, "out": str(folder)}}))
    return folder


def test_report_plots_runs_and_groups_seeds(tmp_path, capsys):
    recipe = {"env": {"kind": "linear"}, "estimator": {"kind": "shac"}}
    a = _fake_run(tmp_path / "shac_seed0", 0, [-50.0, None, -30.0, float("nan"), -10.0], recipe)
    b = _fake_run(tmp_path / "shac_seed1", 1, [-60.0, None, -20.0, None, -15.0], recipe)
    out = tmp_path / "plots" / "curves.png"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert out.read_bytes().startswith(PNG_MAGIC)
    grouped = tmp_path / "grouped.png"
    assert main(["report", str(a), str(b), "--out", str(grouped), "--group", "--metric", "train/return"]) == 0
    assert grouped.read_bytes().startswith(PNG_MAGIC)
    # seed 0's last 3 evaluations hold a logged nan: it diverged, is counted, and seed 1 alone is scored
    assert capsys.readouterr().out.splitlines() == [
        "group  runs  diverged  IQM [95% CI] of mean of the last 3 'eval/return'",
        "shac   2     1         -31.67 [-31.67, -31.67]",
        f"wrote {grouped}"]


def test_report_compares_named_groups_by_iqm_and_bootstrap_interval(tmp_path, monkeypatch, capsys):
    """Named groups (globs, comma lists), the default score (mean of the last 3 evaluations after iteration
    0), and the IQM and interval from mbmix_fw.maths.statistics on exactly those scores."""
    from mbmix_fw.maths.statistics import summarize_scores

    monkeypatch.chdir(tmp_path)
    finals = {"shac": [10.0, 12.0, 11.0, 30.0], "mix": [5.0, 6.0, 7.0]}
    for name, values in finals.items():
        for seed, value in enumerate(values):
            _fake_run(Path("runs") / f"{name}_s{seed}", seed, [100.0, None, value - 1, value, value + 1])
    out = Path("cmp.png")
    assert main(["report", "shac=runs/shac_s*", "mix=runs/mix_s0,runs/mix_s1,runs/mix_s2", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = summarize_scores(finals)
    assert expected["shac"].iqm == pytest.approx(11.5)  # (11 + 12) / 2: the 30 is an outlier
    assert lines[1].split(maxsplit=3) == ["shac", "4", "0", str(expected["shac"])]
    assert lines[2].split(maxsplit=3) == ["mix", "3", "0", str(expected["mix"])]
    assert lines[3] == f"wrote {out}" and out.read_bytes().startswith(PNG_MAGIC)
    # --score: the last logged value only; a run with fewer evaluations is scored on all it has
    assert main(["report", "shac=runs/shac_s*", "--score", "eval/return:1", "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split(maxsplit=3)[3].startswith("12.5 [")
    _fake_run(Path("runs") / "short", 0, [None, 4.0, 8.0], initial=100.0)
    assert main(["report", "short=runs/short", "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split(maxsplit=3)[3] == "6 [6, 6]"


@pytest.mark.parametrize("arguments, message", [
    (["shac=runs/nothing_s*"], "runs/nothing_s*: matches no run folder (group 'shac')"),
    (["shac=runs/missing"], "runs/missing: no such run folder"),
    (["shac=runs/untrained"], "runs/untrained/metrics.csv: no logged 'eval/return' value after iteration 0 "
                              "(nothing to score)"),
    (["shac=runs/ok", "--score", "eval/retrun"],
     "runs/ok/metrics.csv: no column 'eval/retrun'; available: train/return, eval/return"),
    (["shac=runs/ok", "--score", "eval/return:0"],
     "--score eval/return:0: expected METRIC[:LAST] with LAST a positive integer (e.g. eval/return:3)"),
    (["shac=runs/ok", "shac=runs/ok"], "shac=runs/ok: group 'shac' is named twice"),
])
def test_report_group_bad_input_is_one_line(tmp_path, monkeypatch, capsys, arguments, message):
    monkeypatch.chdir(tmp_path)
    _fake_run(Path("runs") / "ok", 0, [0.0, 1.0, 2.0, 3.0])
    _fake_run(Path("runs") / "untrained", 0, [None, None], initial=-5.0)  # row 0 is no evaluation of training
    assert main(["report", *arguments, "--out", "x.png"]) == 2
    assert error_lines(capsys.readouterr().err) == [message]
    assert not Path("x.png").exists()


def test_report_groups_by_recipe_not_by_folder_name(tmp_path):
    from mbmix_fw.commands.report import _group_key

    a = _fake_run(tmp_path / "a", 0, [1.0], {"env": {"kind": "linear"}, "estimator": {"kind": "shac"}})
    b = _fake_run(tmp_path / "b", 1, [1.0], {"env": {"kind": "linear"}, "estimator": {"kind": "shac"}})
    c = _fake_run(tmp_path / "c", 1, [1.0], {"env": {"kind": "linear"}, "estimator": {"kind": "mix"}})
    assert _group_key(a) == _group_key(b) != _group_key(c)


def test_report_errors_are_user_errors(tmp_path, capsys):
    run = _fake_run(tmp_path / "run", 0, [1.0, 2.0])
    assert main(["report", str(run), "--metric", "eval/retrun", "--out", str(tmp_path / "x.png")]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"{run / 'metrics.csv'}: no column 'eval/retrun'; available: train/return, eval/return"]
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_report_writes_beside_the_runs_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sweep = Path("runs") / "sweep"
    a = _fake_run(sweep / "seed0", 0, [-50.0, -10.0])
    b = _fake_run(sweep / "seed1", 1, [-60.0, -15.0])
    assert main(["report", str(a)]) == 0
    assert capsys.readouterr().out == f"wrote {a / 'learning_curves.png'}\n"
    assert (a / "learning_curves.png").read_bytes().startswith(PNG_MAGIC)
    assert main(["report", str(a), str(b)]) == 0
    assert capsys.readouterr().out == f"wrote {sweep / 'learning_curves.png'}\n"
    assert (sweep / "learning_curves.png").read_bytes().startswith(PNG_MAGIC)
    assert not Path("learning_curves.png").exists()
