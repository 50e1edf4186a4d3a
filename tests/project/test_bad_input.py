"""Bad input, tried as a new user would: about 80 bad recipes, overrides, run folders and checkpoints.

Every one goes through the real CLI (``mbmix_fw.commands.cli.main``) with the installed plugins and must give
exit code 2, exactly one line ``mbmix-fw: error: …`` that names the field (or the file), and write
nothing: no run folder, no change to an existing one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from mbmix_fw.commands.cli import main
from mbmix_fw.training.run_folder import WRITER_LOCK

BASE = {
    "run": {"iterations": "2", "eval_every": "0", "checkpoint_every": "1", "eval_envs": "2"},
    "env": {"kind": '"pendulum"', "num_envs": "4", "episode_length": "8"},
    "estimator": {"kind": '"shac"', "horizon": "4"},
    "policy": {"hidden": "[8]"},
    "critic": {"hidden": "[8]", "iterations": "1", "minibatches": "1"},
}
MODEL_BASED = {
    "estimator": {"kind": '"mix"', "horizon": "4", "lam": "0.5"},
    "world_model": {"kind": '"sobolev_mlp"', "hidden": "[8]", "probes": "1", "batch_size": "8",
                    "buffer_capacity": "64"},
    "scheduler": {"kind": '"dyna"', "model_branches": "4", "model_fit_steps": "1", "warmup_iterations": "1"},
}


def recipe_text(changes: dict[str, str | None], base: dict[str, dict[str, str]] = BASE) -> str:
    """TOML text of ``base`` with ``{"section.key": "raw TOML value"}`` set (``None`` deletes the key;
    a bare ``"section"`` key replaces the whole table by a value)."""
    tables = {name: dict(values) for name, values in base.items()}
    top = {}
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if not name:
            tables.pop(section, None)
            top[section] = value
        elif value is None:
            tables.setdefault(section, {}).pop(name, None)
        else:
            tables.setdefault(section, {})[name] = value
    lines = [f"{k} = {v}" for k, v in top.items()]
    for section, values in tables.items():
        lines += [f"[{section}]", *(f"{k} = {v}" for k, v in values.items())]
    return "\n".join(lines) + "\n"


def model_based(**changes: str | None) -> tuple[dict[str, str | None], dict[str, dict[str, str]]]:
    return changes, {**BASE, **MODEL_BASED}


# (changes to the recipe, or (changes, base)), then the text the one error line must contain
BAD_RECIPES = {
    # --- types are strict: TOML has real ones ---
    "string for int": ({"env.num_envs": '"64"'}, 'env.num_envs: expected an integer, got string "64" '
                                                 "(write it without quotes: 64)"),
    "bool for int": ({"run.iterations": "true"}, "run.iterations: expected an integer, got boolean true"),
    "string for bool": ({"policy.layer_norm": '"yes"'}, 'policy.layer_norm: expected true or false, got string'),
    "int for bool": ({"policy.layer_norm": "1"}, "policy.layer_norm: expected true or false, got integer 1"),
    "quoted bool": ({"policy.squash": '"false"'}, "policy.squash: expected true or false, got string "
                                                  '"false" (write it without quotes: false)'),
    "float for int seed": ({"run.seed": "1.0"}, "run.seed: expected an integer, got float 1.0"),
    "exponent for int": ({"run.iterations": "1e3"}, "run.iterations: expected an integer, got float 1000.0 "
                                                    "(write it as an integer: 1000)"),
    "float horizon": ({"estimator.horizon": "32.5"}, "estimator.horizon: expected an integer, got float 32.5"),
    "float num_envs": ({"env.num_envs": "64.0"}, "env.num_envs: expected an integer"),
    "float width": ({"policy.hidden": "[64.0, 64]"}, "policy.hidden.0: expected an integer, got float 64.0"),
    "string hidden": ({"policy.hidden": '"64"'}, 'policy.hidden: expected an array, got string "64"'),
    "int hidden": ({"critic.hidden": "64"}, "critic.hidden: expected an array, got integer 64"),
    "string lr": ({"optim.actor_lr": '"2e-3"'}, 'optim.actor_lr: expected a number, got string "2e-3" '
                                                "(write it without quotes: 2e-3)"),
    "bool lr": ({"optim.actor_lr": "true"}, "optim.actor_lr: expected a number, got boolean true"),
    "string lam": ({"critic.td_lambda": '"0.95"'}, "critic.td_lambda: expected a number, got string"),
    "array gamma": ({"estimator.gamma": "[0.99]"}, "estimator.gamma: expected a number, got array"),
    "string betas": ({"optim.betas": '"0.7,0.95"'}, "optim.betas: expected an array, got string"),
    "string in betas": ({"optim.betas": '["0.7", 0.95]'}, "optim.betas.0: expected a number, got string"),
    "one beta": ({"optim.betas": "[0.7]"}, "optim.betas.1: Field required"),
    "three betas": ({"optim.betas": "[0.7, 0.9, 0.95]"}, "optim.betas: Tuple should have at most 2 items"),
    "int device": ({"run.device": "1"}, "run.device: Input should be 'auto', 'cpu' or 'cuda'"),
    "int out": ({"run.out": "5"}, "run.out: expected a string, got integer 5"),
    "date out": ({"run.out": "1979-05-27"}, "run.out: expected a string, got date-time 1979-05-27"),
    "upper-case activation": ({"policy.activation": '"ELU"'}, "policy.activation: Input should be 'elu'"),
    "table as a value": ({"run": "3"}, "run: expected a table [run], got integer"),
    "string episode_length": ({"env.episode_length": '"200"'}, "env.episode_length: expected an integer"),
    "string plugin float": ({"env.max_torque": '"2"'}, "env.max_torque: expected a number, got string"),
    "string scheduler float": (model_based(**{"scheduler.env_weight": '"0.5"'}),
                               "scheduler.env_weight: expected a number, got string"),
    "bool world-model int": (model_based(**{"world_model.probes": "true"}),
                             "world_model.probes: expected an integer, got boolean true"),
    "string world-model bool": (model_based(**{"world_model.probe_mixing": '"no"'}),
                                "world_model.probe_mixing: expected true or false"),
    "adjoint probes never backpropagated": (model_based(**{"scheduler.env_weight": "0.0"}),
                                            "world_model.probe_source: 'adjoint' takes its Jacobian probes"),
    "adjoint probes through a full blend": (model_based(**{"scheduler.jacobian_blend": "1.0"}),
                                            "world_model.probe_source: 'adjoint'"),
    "blend above one": (model_based(**{"scheduler.jacobian_blend": "1.5"}), "scheduler.jacobian_blend"),
    "unknown probe source": (model_based(**{"world_model.probe_source": '"cotangent"'}),
                             "world_model.probe_source"),
    # --- nan and inf, in core and plugin tables ---
    "inf lr": ({"optim.actor_lr": "inf"}, "optim.actor_lr: expected a finite number, got inf"),
    "nan lr": ({"optim.critic_lr": "nan"}, "optim.critic_lr: expected a finite number, got nan"),
    "nan log std": ({"policy.init_log_std": "nan"}, "policy.init_log_std: expected a finite number, got nan"),
    "-inf log std": ({"policy.init_log_std": "-inf"}, "policy.init_log_std: expected a finite number, got -inf"),
    "inf torque": ({"env.max_torque": "inf"}, "env.max_torque: expected a finite number, got inf"),
    "inf gravity": ({"env.gravity": "+inf"}, "env.gravity: expected a finite number, got inf"),
    "nan gamma": ({"estimator.gamma": "nan"}, "estimator.gamma: expected a finite number, got nan"),
    "nan critic lam": ({"critic.td_lambda": "nan"}, "critic.td_lambda: expected a finite number, got nan"),
    "inf grad clip": ({"optim.grad_clip": "inf"}, "optim.grad_clip: expected a finite number, got inf"),
    "nan beta": ({"optim.betas": "[nan, 0.9]"}, "optim.betas.0: expected a finite number, got nan"),
    "nan tau": ({"critic.tau": "nan"}, "critic.tau: expected a finite number, got nan"),
    "inf model lr": (model_based(**{"world_model.lr": "inf"}), "world_model.lr: expected a finite number"),
    "nan alpha": (model_based(**{"world_model.alpha_s": "nan"}), "world_model.alpha_s: expected a finite"),
    "nan env weight": (model_based(**{"scheduler.env_weight": "nan"}), "scheduler.env_weight: expected a finite"),
    "nan mix lam": (model_based(**{"estimator.lam": "nan"}), "estimator.lam: expected a finite number"),
    # --- absurd sizes: bounded by documented maxima, or by the memory they need ---
    "10**17 envs": ({"env.num_envs": str(10**17)}, "env.num_envs: Input should be less than or equal to 1048576"),
    "10**12 width": ({"policy.hidden": f"[{10**12}]"}, "policy.hidden.0: Input should be less than or equal to 65536"),
    "10**12 horizon": ({"estimator.horizon": str(10**12)}, "estimator.horizon: Input should be less than or equal"),
    "10**12 episode": ({"env.episode_length": str(10**12)}, "env.episode_length: Input should be less than"),
    "10**9 eval envs": ({"run.eval_envs": str(10**9)}, "run.eval_envs: Input should be less than or equal"),
    "10**12 critic passes": ({"critic.iterations": str(10**12)}, "critic.iterations: Input should be less than"),
    "10**12 minibatches": ({"critic.minibatches": str(10**12)}, "critic.minibatches: Input should be less than"),
    "10**12 iterations": ({"run.iterations": str(10**12)}, "run.iterations: Input should be less than or equal"),
    "17 layers": ({"policy.hidden": "[1" + ", 1" * 16 + "]"}, "policy.hidden: List should have at most 16 items"),
    "huge log std": ({"policy.init_log_std": "1000.0"}, "policy.init_log_std: Input should be less than or equal"),
    "10**12 branches": (model_based(**{"scheduler.model_branches": str(10**12)}), "scheduler.model_branches:"),
    "10**12 buffer": (model_based(**{"world_model.buffer_capacity": str(10**12)}), "world_model.buffer_capacity:"),
    "10**12 model width": (model_based(**{"world_model.hidden": f"[{10**12}]"}), "world_model.hidden.0:"),
    "10**6 members": (model_based(**{"world_model.members": str(10**6)}), "world_model.members:"),
    "networks beyond any memory": ({"critic.hidden": "[" + ", ".join(["65536"] * 16) + "]"},
                                   "the networks of policy.hidden=[8] and critic.hidden=[65536, "),
    "window beyond any memory": ({"estimator.kind": '"bptt"', "estimator.horizon": None,
                                  "env.num_envs": "1048576", "env.episode_length": "1000000"},
                                 "one differentiable window of env.num_envs=1048576 × "
                                 "env.episode_length=1000000 steps"),
    "truncated bptt window beyond the episode (at build)": (
        {"estimator.kind": '"bptt"', "estimator.horizon": "9"},
        "estimator.horizon=9 is outside [1, 8], the window lengths estimator 'bptt' can roll on env 'pendulum'"),
    "ahac min horizon above max": ({"scheduler.kind": '"ahac"', "scheduler.min_horizon": "16",
                                    "scheduler.max_horizon": "8"},
                                   "scheduler.max_horizon: max_horizon=8 is below min_horizon=16"),
    "ahac zero threshold": ({"scheduler.kind": '"ahac"', "scheduler.contact_threshold": "0"},
                            "scheduler.contact_threshold: Input should be greater than 0"),
    "ahac on an env without contact signal (at build)": (
        {"scheduler.kind": '"ahac"'},
        "scheduler 'ahac' needs the env's contact signal but env Pendulum does not report one"),
    "ahac horizons beyond what bptt can roll (at build)": (
        {"estimator.kind": '"bptt"', "estimator.horizon": None, "scheduler.kind": '"ahac"'},
        "scheduler 'ahac' plans horizons [8, 64] but estimator 'bptt' honours only [1, 8] on env 'pendulum'"),
    "env-step budget beyond the iteration cap (at build)": (
        {"run.env_steps": "100"},
        "run.env_steps=100 cannot be reached in run.iterations=2 iterations of at most 4 steps × 4 envs (32 env "
        "steps); raise run.iterations"),
    "negative env-step budget": ({"run.env_steps": "-1"}, "run.env_steps: Input should be greater than or equal to 0"),
    "tabular table too large": ({"env.kind": '"tabular_mdp"', "env.n_states": "10000", "env.n_actions": "1000"},
                                "env.n_actions: the transition table P would hold n_states² × n_actions = 1e+11"),
    "model ensemble too large": (model_based(**{"world_model.hidden": "[65536, 65536]", "world_model.members": "1024"}),
                                 "world_model.members: 1024 members of hidden=[65536, 65536] hold 4.4e+12"),
    # --- values in range of the type but wrong ---
    "zero envs": ({"env.num_envs": "0"}, "env.num_envs: Input should be greater than or equal to 1, got 0"),
    "negative seed": ({"run.seed": "-1"}, "run.seed: Input should be greater than or equal to 0, got -1"),
    "zero width": ({"policy.hidden": "[0]"}, "policy.hidden.0: Input should be greater than or equal to 1"),
    "beta of one": ({"optim.betas": "[0.9, 1.0]"}, "optim.betas.1: Input should be less than 1, got 1.0"),
    "big dt": ({"env.dt": "1.5"}, "env.dt: Input should be less than or equal to 0.5, got 1.5"),
    "gamma above one": ({"estimator.gamma": "1.01"}, "estimator.gamma: Input should be less than or equal to 1"),
    "empty out": ({"run.out": '""'}, "run.out: empty; it would write the run into the current directory"),
    "blank out": ({"run.out": '"   "'}, "run.out: empty"),
    "interval not dividing": (model_based(**{"estimator.interval": "3"}), "estimator.interval: interval=3 must "
                                                                         "divide horizon=4"),
    "empty model hidden": (model_based(**{"world_model.hidden": "[]"}), "world_model.hidden: List should have "
                                                                       "at least 1 item"),
    "misspelt key": ({"env.nmu_envs": "4"}, "env.nmu_envs: unknown field (did you mean 'num_envs'?)"),
    "dyna without a model": ({"scheduler.kind": '"dyna"'}, "world_model: missing; scheduler 'dyna'"),
}


def run_bad(tmp_path: Path, argv: list[str], capsys) -> str:
    """Run the CLI, assert exit 2 and exactly one error line; return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mbmix-fw: error: "), err
    return lines[0]


def written(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and a hash of its bytes (to show that nothing was written). The writer
    lock is left out: a resume takes it before it reads the checkpoint, so its holder line is rewritten even
    when the run then turns out to be broken; it holds no results."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != WRITER_LOCK}


@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_bad_recipe_exits_2_with_one_line_naming_the_field(tmp_path, monkeypatch, capsys, case):
    changes, expected = BAD_RECIPES[case]
    changes, base = changes if isinstance(changes, tuple) else (changes, BASE)
    recipe = tmp_path / "bad.toml"
    recipe.write_text(recipe_text(changes, base), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # run.out = "" would write here
    at_run_time = "memory" in case or "(at build)" in case  # checks of the built env: `run` only
    for argv in ([] if at_run_time else [["validate", str(recipe)]]) + [["run", str(recipe), "--no-progress"]]:
        line = run_bad(tmp_path, argv, capsys)
        assert expected in line
        if not at_run_time:  # validation errors name the file
            assert line.startswith(f"mbmix-fw: error: {recipe}: ")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"], "something was written"


BAD_OVERRIDES = {
    "quoted int": (["--set", 'env.num_envs="64"'], 'env.num_envs: expected an integer, got string "64"'),
    "bare word for bool": (["--set", "policy.layer_norm=yes"], 'policy.layer_norm: expected true or false, '
                                                              'got string "yes"'),
    "nan by --set": (["--set", "optim.actor_lr=nan"], "optim.actor_lr: expected a finite number, got nan"),
    "inf by --set": (["--set", "env.max_torque=inf"], "env.max_torque: expected a finite number, got inf"),
    "exponent for int by --set": (["--set", "estimator.horizon=1e12"], "estimator.horizon: expected an integer"),
    "huge by --set": (["--set", f"env.num_envs={10**17}"], "env.num_envs: Input should be less than or equal"),
    "empty out by --set": (["--set", "run.out="], "run.out: empty"),
    "empty --out": (["--out", ""], "run.out: empty"),
    "--out the current directory": (["--out", "."], ".: is the current directory; a run writes checkpoints/"),
    "--out a parent folder": (["--out", ".."], "..: is a parent of the current directory"),
    "run.out the current directory": (["--set", 'run.out="./"'], "is the current directory"),
    "unknown placeholder": (["--set", 'run.out="runs/{nme}"'], "run.out: unknown placeholder {nme}; only {name}"),
    "bare string for float": (["--set", "optim.actor_lr=fast"], 'optim.actor_lr: expected a number, got string'),
}


@pytest.mark.parametrize("case", list(BAD_OVERRIDES))
def test_bad_override_exits_2(tmp_path, monkeypatch, capsys, case):
    extra, expected = BAD_OVERRIDES[case]
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_text({}), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    argv = ["run", str(recipe), "--no-progress", *extra]
    if not any(a == "--out" or a.startswith("run.out") for a in extra):
        argv += ["--out", str(tmp_path / "out")]
    assert expected in run_bad(tmp_path, argv, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.toml"]


def test_overrides_are_parsed_as_toml_then_validated_strictly(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_text({}), encoding="utf-8")
    sets = ["env.num_envs=3", "optim.actor_lr=1", "policy.layer_norm=false", "optim.betas=[0.5, 0.9]",
            "run.out=runs/x"]
    assert main(["validate", str(recipe), *(a for s in sets for a in ("--set", s))]) == 0
    from mbmix_fw.building.recipe import load_recipe

    loaded = load_recipe(recipe, overrides=sets)
    assert loaded.env.num_envs == 3 and loaded.optim.actor_lr == 1.0 and loaded.policy.layer_norm is False
    assert loaded.optim.betas == (0.5, 0.9) and loaded.run.out == "runs/x"


# ---- --out ----
def test_out_on_an_existing_file(tmp_path, capsys):
    recipe, target = tmp_path / "r.toml", tmp_path / "taken"
    recipe.write_text(recipe_text({}), encoding="utf-8")
    target.write_text("mine\n")
    before = written(tmp_path)
    line = run_bad(tmp_path, ["run", str(recipe), "--no-progress", "--out", str(target)], capsys)
    assert line == f"mbmix-fw: error: {target}: exists and is not a folder; choose another run folder with --out"
    assert written(tmp_path) == before


def test_out_below_an_existing_file(tmp_path, capsys):
    recipe, target = tmp_path / "r.toml", tmp_path / "taken"
    recipe.write_text(recipe_text({}), encoding="utf-8")
    target.write_text("mine\n")
    before = written(tmp_path)
    line = run_bad(tmp_path, ["run", str(recipe), "--no-progress", "--out", str(target / "run")], capsys)
    assert line == f"mbmix-fw: error: {target / 'run'}: cannot create the run folder: {target} is not a folder"
    assert written(tmp_path) == before


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders; the /sys case below covers root")
def test_out_in_a_read_only_folder(tmp_path, capsys):
    recipe, locked = tmp_path / "r.toml", tmp_path / "locked"
    recipe.write_text(recipe_text({}), encoding="utf-8")
    locked.mkdir()
    locked.chmod(0o555)
    try:
        line = run_bad(tmp_path, ["run", str(recipe), "--no-progress", "--out", str(locked / "run")], capsys)
        assert line.startswith(f"mbmix-fw: error: {locked / 'run'}: cannot write the run folder in {locked}: ")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux's read-only /sys")
def test_out_where_nobody_may_write(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_text({}), encoding="utf-8")
    target = Path("/sys/kernel/mbmix-fw-test-run")
    line = run_bad(tmp_path, ["run", str(recipe), "--no-progress", "--out", str(target)], capsys)
    assert line.startswith(f"mbmix-fw: error: {target}: cannot write the run folder in /sys/kernel: ")
    assert not target.exists()


# ---- resume with a broken run folder ----
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One real two-iteration pendulum run, copied by every resume case."""
    folder = tmp_path_factory.mktemp("finished")
    recipe = folder / "r.toml"
    recipe.write_text(recipe_text({}), encoding="utf-8")
    assert main(["run", str(recipe), "--no-progress", "--out", str(folder / "run")]) == 0
    return folder / "run"


CKPT, RECIPE = "checkpoints/last.pt", "recipe.json"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_recipe(**changes) -> callable:
    def edit(run: Path) -> None:
        path = run / "recipe.json"
        data = json.loads(path.read_text())
        for key, value in changes.items():
            section, name = key.split(".")
            data[section][name] = value
        path.write_text(json.dumps(data))
    return edit


def _swap_env(run: Path) -> None:
    """Another env with other observation and action sizes (LQR: 4 and 2; the pendulum's: 3 and 1)."""
    data = json.loads((run / RECIPE).read_text())
    data["env"] = {"kind": "lqr", "num_envs": 4, "episode_length": 8}
    (run / RECIPE).write_text(json.dumps(data))


def _older(edit) -> callable:
    """``edit`` in a run folder from before ``checkpoints/recipe_at_start.json`` (the recipe a run started
    with) was written."""
    def older(run: Path) -> None:
        (run / "checkpoints" / "recipe_at_start.json").unlink()
        edit(run)
    return older


def _poison_policy(run: Path) -> None:
    state = torch.load(run / CKPT, weights_only=True)
    first = next(iter(state["policy"]))
    state["policy"][first].view(-1)[0] = float("nan")
    torch.save(state, run / CKPT)


def _flip_a_weight_bit(run: Path) -> None:
    """One bit of one tensor's bytes flipped in place, as a bad disk or a broken copy does: the file
    still unpickles, and without the checksum test it loads as slightly different weights."""
    path = run / CKPT
    with zipfile.ZipFile(path) as archive:
        member = next(info for info in archive.infolist() if "/data/" in info.filename and info.file_size >= 16)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[member.header_offset + 26:member.header_offset + 30])
    data[member.header_offset + 30 + name_length + extra_length + member.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


class _NotAllowed:
    """Unpickling this would run code; ``weights_only=True`` must refuse it."""


BAD_RUN_FOLDERS = {
    "empty checkpoint": (lambda run: (run / CKPT).write_bytes(b""), CKPT, "the checkpoint is empty (0 bytes)"),
    "truncated checkpoint": (lambda run: _truncate(run / CKPT), CKPT, "not a readable checkpoint (truncated or "
                                                                      "corrupt?)"),
    "random bytes": (lambda run: (run / CKPT).write_bytes(os.urandom(4096)), CKPT, "not a readable checkpoint"),
    "text file": (lambda run: (run / CKPT).write_text("hello\n"), CKPT, "not a readable checkpoint"),
    "pickled object": (lambda run: torch.save({"x": _NotAllowed()}, run / CKPT), CKPT,
                       "not a readable checkpoint"),
    "a list, not a checkpoint": (lambda run: torch.save([1, 2], run / CKPT), CKPT,
                                 "not an mbmix-fw checkpoint: holds a list, not a dict"),
    "a dict of something else": (lambda run: torch.save({"weights": torch.zeros(3)}, run / CKPT), CKPT,
                                 "not an mbmix-fw checkpoint: no format, iteration, policy"),
    "checkpoint is a folder": (lambda run: ((run / CKPT).unlink(), (run / CKPT).mkdir()), CKPT, "no such file"),
    "nan in the policy": (_poison_policy, CKPT, "holds nan or inf; the checkpoint is damaged"),
    "a flipped bit in the weights": (_flip_a_weight_bit, CKPT, "does not match its checksum"),
    "policy hidden edited": (_edit_recipe(**{"policy.hidden": [16]}), RECIPE,
                             "policy.hidden is [16] but the run started with [8]; its checkpoint cannot honour"),
    "critic layers edited": (_edit_recipe(**{"critic.hidden": [8, 8]}), RECIPE, "critic.hidden is [8, 8] but"),
    "layer norm switched off": (_edit_recipe(**{"policy.layer_norm": False}), RECIPE, "policy.layer_norm is false"),
    "env swapped": (_swap_env, RECIPE, 'env.kind is "lqr" but the run started with "pendulum"'),
    # a folder written before checkpoints/recipe_at_start.json existed: the checkpoint's tensors are compared
    "older folder, policy hidden edited": (_older(_edit_recipe(**{"policy.hidden": [16]})), CKPT,
                                           f"does not match {{run}}/{RECIPE}: policy."),
    "older folder, critic layers edited": (_older(_edit_recipe(**{"critic.hidden": [8, 8]})), CKPT,
                                           f"does not match {{run}}/{RECIPE}: critic."),
    "older folder, layer norm switched off": (_older(_edit_recipe(**{"policy.layer_norm": False})), CKPT,
                                              f"does not match {{run}}/{RECIPE}: policy."),
    "older folder, env swapped": (_older(_swap_env), CKPT, "has shape"),
    "string in recipe.json": (_edit_recipe(**{"env.num_envs": "4"}), RECIPE, "env.num_envs: expected an integer"),
    "nan in recipe.json": (_edit_recipe(**{"optim.actor_lr": float("nan")}), RECIPE,
                           "optim.actor_lr: expected a finite number"),
    "recipe.json random bytes": (lambda run: (run / RECIPE).write_bytes(b"\xff\xfe\x00" + os.urandom(64)), RECIPE,
                                 "not valid JSON"),
    "recipe.json empty": (lambda run: (run / RECIPE).write_text(""), RECIPE, "not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_RUN_FOLDERS))
def test_resume_a_broken_run_folder(finished_run, tmp_path, capsys, case):
    edit, named, expected = BAD_RUN_FOLDERS[case]
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    edit(run)
    before = written(run)
    line = run_bad(tmp_path, ["resume", str(run), "--no-progress"], capsys)
    assert line.startswith(f"mbmix-fw: error: {run / named}: "), line
    assert expected.format(run=run) in line
    assert written(run) == before, "resume wrote into the run folder"


def test_a_flipped_bit_loads_normally_without_the_checksum_test(finished_run, tmp_path):
    """What the test above guards against: torch.load itself takes the damaged file."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    clean = torch.load(run / CKPT, weights_only=True)
    _flip_a_weight_bit(run)
    damaged = torch.load(run / CKPT, weights_only=True)
    assert any(not torch.equal(a, b) for a, b in zip(clean["policy"].values(), damaged["policy"].values())) or \
        any(not torch.equal(a, b) for a, b in zip(clean["critic"].values(), damaged["critic"].values()))


def test_render_and_diagnose_refuse_a_damaged_checkpoint_in_one_line(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _flip_a_weight_bit(run)
    before = written(run)
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_text({}), encoding="utf-8")
    for argv in (["render", str(run), "--out", str(tmp_path / "r.png")],
                 ["diagnose", "variance", str(recipe), "--checkpoint", str(run / CKPT), "--samples", "2",
                  "--png", str(tmp_path / "d.png")]):
        line = run_bad(tmp_path, argv, capsys)
        assert line.startswith(f"mbmix-fw: error: {run / CKPT}: "), line
        assert "does not match its checksum" in line and "restore the file from a copy" in line, line
    assert written(run) == before and not (tmp_path / "r.png").exists() and not (tmp_path / "d.png").exists()
