"""Stateful components survive a resume: the trainer checkpoints the optional ``state_dict`` /
``load_state_dict`` of the env, the estimator and the scheduler."""
from __future__ import annotations

import torch

import mbmix_fw as mb
from mbmix_estimators import Shac, ShacConfig
from mbmix_fw.testing import LinearEnv
from mbmix_fw.training.trainer import CHECKPOINT, Trainer


class RandomCriticPasses(mb.Scheduler):
    """Draws each iteration's critic passes from its own generator: its state must be checkpointed."""

    def __init__(self):
        self.rng = torch.Generator().manual_seed(123)

    def plan(self, iteration, total):
        passes = int(torch.randint(0, 4, (1,), generator=self.rng))
        return mb.Plan(critic_iterations=passes)

    def state_dict(self):
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state):
        self.rng.set_state(state["rng"])


def make_trainer(out_dir):
    return Trainer(
        LinearEnv(num_envs=4, episode_length=10), Shac(ShacConfig(horizon=4)), RandomCriticPasses(),
        run=mb.RunSettings(iterations=8, checkpoint_every=4, eval_envs=2),
        critic=mb.CriticSettings(iterations=1, minibatches=2), out_dir=out_dir, progress=False,
    )


def test_a_stateful_scheduler_resumes_exactly(tmp_path, crash_after_checkpoint):
    full = make_trainer(tmp_path / "full")
    full.train()
    crash_after_checkpoint(make_trainer(tmp_path / "cut"), 4)
    resumed = make_trainer(tmp_path / "cut")
    resumed.load_checkpoint(tmp_path / "cut" / CHECKPOINT)
    resumed.train()
    assert torch.equal(full.scheduler.rng.get_state(), resumed.scheduler.rng.get_state())
    for a, b in zip(full.critic.parameters(), resumed.critic.parameters()):
        assert torch.equal(a, b)
    state = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)
    assert state["components"]["scheduler"] is not None and state["components"]["env"] is None
