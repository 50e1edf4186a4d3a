"""``resume`` refuses a ``recipe.json`` edited in a setting its checkpoint cannot honour, and honours the
settings that may change (issue 24, item 3: ``env.num_envs`` 8 → 32 resumed with 8 envs and exit 0).

Each refusal is one line naming the file and the field, exit 2, and the run folder is left byte for byte.
The recipe a run started with is compared first (``checkpoints/recipe_at_start.json``,
``mbmix_fw/building/resumable.py``); a folder written before that copy existed falls back to what the
checkpoint's tensors show (``mbmix_fw/training/checkpoint.py``: ``check_settings``).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from mbmix_fw.building.resumable import RESUMABLE
from mbmix_fw.commands.cli import main

RECIPE_TEXT = """
[run]
seed = 2
iterations = 3
checkpoint_every = 2
eval_envs = 2
[env]
kind = "pendulum"
num_envs = 8
episode_length = 10
[world_model]
kind = "sobolev_mlp"
hidden = [16]
batch_size = 16
buffer_capacity = 512
[estimator]
kind = "mix"
horizon = 4
[scheduler]
kind = "dyna"
model_branches = 4
model_fit_steps = 2
warmup_iterations = 1
[policy]
hidden = [16]
[critic]
hidden = [16]
iterations = 1
minibatches = 2
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished MB-MIX run (its world model fitted), copied by every case."""
    folder = tmp_path_factory.mktemp("finished")
    recipe = folder / "mbmix.toml"
    recipe.write_text(RECIPE_TEXT, encoding="utf-8")
    assert main(["run", str(recipe), "--no-progress", "--out", str(folder / "run")]) == 0
    return folder / "run"


@pytest.fixture
def run(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def edit(run: Path, field: str, value) -> None:
    data = json.loads((run / "recipe.json").read_text(encoding="utf-8"))
    table, name = field.split(".")
    data[table][name] = value
    (run / "recipe.json").write_text(json.dumps(data), encoding="utf-8")


def written(folder: Path) -> dict[str, str]:
    """Every file and a hash of its bytes, but the writer lock (its holder line is no result)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".writer.lock"}


def refused(run: Path, capsys) -> str:
    """Resume ``run``: exit 2, one error line, nothing written; that line."""
    before = written(run)
    capsys.readouterr()
    assert main(["resume", str(run), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert written(run) == before, "a refused resume wrote into the run folder"
    return lines[0]


FIXED = {
    "env.num_envs": (32, "32", "8"),
    "world_model.buffer_capacity": (1024, "1024", "512"),
    "world_model.hidden": ([32], "[32]", "[16]"),
    "world_model.lr": (0.01, "0.01", "0.001"),
    "policy.hidden": ([16, 16], "[16, 16]", "[16]"),
    "critic.hidden": ([32], "[32]", "[16]"),
    "optim.betas": ([0.9, 0.999], "[0.9, 0.999]", "[0.7, 0.95]"),
    "optim.actor_lr": (0.01, "0.01", "0.002"),
    "estimator.horizon": (8, "8", "4"),
    "scheduler.model_branches": (8, "8", "4"),
    "run.seed": (5, "5", "2"),
    "run.eval_envs": (4, "4", "2"),
}
"""Settings a checkpoint cannot honour: ``field: (new value, shown now, shown as started)``."""


@pytest.mark.parametrize("field", list(FIXED))
def test_an_edit_the_checkpoint_cannot_honour_is_refused_naming_the_field(run, capsys, field):
    value, now, was = FIXED[field]
    edit(run, field, value)
    line = refused(run, capsys)
    assert line.startswith(f"mbmix-fw: error: {run / 'recipe.json'}: {field} is {now} but the run started with "
                           f"{was}"), line
    assert "its checkpoint cannot honour that" in line and "run.iterations, run.env_steps" in line


OLDER_FOLDER = {
    "env.num_envs": (32, "env.num_envs gives 32 envs but the checkpoint holds the states of 8"),
    "world_model.buffer_capacity": (1024, "world_model.buffer_capacity is 1024 but the checkpoint's replay "
                                          "buffer holds 512"),
    "optim.betas": ([0.9, 0.999], "optim.betas is [0.9, 0.999] but the checkpoint's actor_opt was trained with "
                                  "[0.7, 0.95]"),
}


@pytest.mark.parametrize("field", list(OLDER_FOLDER))
def test_a_folder_without_the_started_recipe_is_checked_against_the_checkpoint(run, capsys, field):
    value, expected = OLDER_FOLDER[field]
    (run / "checkpoints" / "recipe_at_start.json").unlink()
    edit(run, field, value)
    line = refused(run, capsys)
    checkpoint = run / "checkpoints" / "last.pt"
    assert line.startswith(f"mbmix-fw: error: {checkpoint}: does not match {run / 'recipe.json'}: {expected}"), line


HONOURED = {
    "run.iterations": 5,
    "run.env_steps": 96,  # 3 iterations x 4 steps x 8 envs
    "run.eval_every": 1,
    "run.eval_every_env_steps": 64,
    "run.checkpoint_every": 1,
    "run.max_skipped_iterations": 3,
    "run.device": "cpu",
    "run.out": "elsewhere/{name}",
}


def test_every_resumable_setting_has_a_case():
    assert set(HONOURED) == set(RESUMABLE)


@pytest.mark.parametrize("field", list(HONOURED))
def test_a_resumable_setting_may_change(run, capsys, field):
    edit(run, field, HONOURED[field])
    assert main(["resume", str(run), "--no-progress"]) == 0, capsys.readouterr().err


def test_a_raised_iteration_count_trains_on_with_the_rest_unchanged(run, capsys):
    import torch

    edit(run, "run.iterations", 5)
    edit(run, "run.eval_every", 1)
    assert main(["resume", str(run), "--no-progress"]) == 0, capsys.readouterr().err
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 5


def test_already_finished_names_exactly_what_may_be_edited(run, capsys):
    capsys.readouterr()
    assert main(["resume", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"{run}: already finished (3 of 3 iterations); nothing to resume. To train longer, "
                          f"raise run.iterations in {run / 'recipe.json'} and resume again"), out
    assert out.endswith(f"(a resume honours changes to {', '.join(RESUMABLE)} only)"), out


def test_a_table_added_or_removed_is_a_difference(tmp_path):
    """A world model added to a model-free run's recipe (or removed) is named by its table."""
    import mbmix_fw as mb
    from mbmix_fw.building.resumable import refuse_unresumable

    started = {"run": {"iterations": 3}, "env": {"kind": "pendulum", "num_envs": 8}}
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "recipe_at_start.json").write_text(json.dumps(started), encoding="utf-8")
    added = {**started, "world_model": {"kind": "sobolev_mlp"}}
    with pytest.raises(mb.UserError, match=r'^R: world_model is \{"kind": "sobolev_mlp"\} but the run started '
                                           r'with absent;'):
        refuse_unresumable(added, tmp_path, "R")
    (tmp_path / "checkpoints" / "recipe_at_start.json").write_text(json.dumps(added), encoding="utf-8")
    with pytest.raises(mb.UserError, match=r"^R: world_model is absent but the run started with \{"):
        refuse_unresumable(started, tmp_path, "R")
    refuse_unresumable({**added, "run": {"iterations": 9}}, tmp_path, "R")  # a resumable field: no error


@pytest.mark.parametrize("doc, start, end", [("docs/runs.md", "a resume honours changes to", "only (`RESUMABLE`"),
                                              ("docs/cli.md", "an edit its checkpoint cannot honour",
                                               "may change (`RESUMABLE`")])
def test_the_guides_list_exactly_the_resumable_settings(doc, start, end):
    text = (Path(__file__).resolve().parents[3] / doc).read_text(encoding="utf-8")
    assert start in text, doc
    listed = re.findall(r"`(run\.[a-z_]+)`", text.split(start, 1)[1].split(end, 1)[0])
    assert set(listed) == set(RESUMABLE), doc
