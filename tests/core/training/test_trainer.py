"""Trainer: NaN guard, determinism, exact resume, atomic checkpoints, learning on a small env."""
from __future__ import annotations

import math

import pytest
import torch

import mbmix_fw as mb
from mbmix_fw.training.checkpoint import load_checkpoint_file, save_checkpoint_file
from mbmix_fw.testing import LinearEnv, tiny_trainer
from mbmix_fw.training.trainer import CHECKPOINT


class PoisonableEnv(LinearEnv):
    """LinearEnv whose rewards turn NaN while ``poisoned`` is set (a diverging simulator)."""

    poisoned = False

    def reward(self, state, action, next_state):
        r = super().reward(state, action, next_state)
        return r * float("nan") if self.poisoned else r


def make_trainer(out_dir=None, iterations=12, seed=0, env=None, **run):
    return tiny_trainer(env or LinearEnv(num_envs=8, episode_length=16), horizon=8, out_dir=out_dir,
                        critic={"iterations": 2}, iterations=iterations, seed=seed, checkpoint_every=4,
                        eval_envs=4, **run)


def params(trainer):
    return [p.detach().clone() for p in [*trainer.policy.parameters(), *trainer.critic.parameters()]]


def test_nan_gradients_skip_the_update_and_are_counted(tmp_path):
    env = PoisonableEnv(num_envs=8, episode_length=16)
    trainer = make_trainer(tmp_path, iterations=3, env=env)
    trainer.train()
    before = params(trainer)
    env.poisoned = True
    trainer.run = mb.RunSettings(iterations=4, checkpoint_every=4, eval_envs=4)
    trainer.train()
    assert trainer.guard.skipped_updates >= 1
    assert trainer.log.history[-1]["guard/skipped_updates"] == trainer.guard.skipped_updates
    assert all(torch.equal(a, b) for a, b in zip(before, params(trainer)))  # nothing moved
    state = load_checkpoint_file(tmp_path / CHECKPOINT)  # the checkpoint is intact and finite
    assert all(torch.isfinite(v).all() for v in state["policy"].values())


def test_same_seed_same_parameters():
    a, b = make_trainer(iterations=5), make_trainer(iterations=5)
    a.train(), b.train()
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))
    c = make_trainer(iterations=5, seed=1)
    c.train()
    assert not all(torch.equal(x, y) for x, y in zip(params(a), params(c)))


def test_resume_from_checkpoint_is_exact(tmp_path, crash_after_checkpoint):
    full = make_trainer(tmp_path / "full")
    full.train()
    crash_after_checkpoint(make_trainer(tmp_path / "cut"), 8)
    resumed = make_trainer(tmp_path / "cut")
    resumed.load_checkpoint(tmp_path / "cut" / CHECKPOINT)
    assert resumed.iteration == 8
    resumed.train()
    assert all(torch.equal(x, y) for x, y in zip(params(full), params(resumed)))
    rows = (tmp_path / "cut" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 13 and rows[1].startswith("0,") and rows[-1].startswith("12,")


def test_failed_checkpoint_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint_file({"x": torch.ones(3)}, path)
    with pytest.raises(Exception):
        save_checkpoint_file({"x": torch.zeros(3), "bad": lambda: None}, path)  # cannot be pickled
    assert torch.equal(load_checkpoint_file(path)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary left behind


def test_checkpoint_loads_with_weights_only(tmp_path):
    trainer = make_trainer(tmp_path, iterations=4)
    trainer.train()
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["iteration"] == 4 and "rng" in state and "actor_opt" in state


def test_outputs_and_learning_on_a_linear_system(tmp_path):
    trainer = make_trainer(tmp_path, iterations=40)
    final = trainer.train()
    assert final["eval/return"] > 0.5 * final["eval/initial_return"]  # returns are negative costs
    assert math.isfinite(final["loss/critic"])
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("iteration", "train/return", "eval/return", "loss/actor", "loss/critic",
                   "time/steps_per_s", "guard/skipped_updates"):
        assert column in header
    assert any((tmp_path / "tb").iterdir())
