"""Stateful components survive a resume: the trainer checkpoints the optional ``state_dict`` /
``load_state_dict`` of the env, the estimator and the scheduler."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import mbmix_fw as mb
from mbmix_fw.testing import tiny_trainer
from mbmix_fw.training.trainer import CHECKPOINT


class RandomCriticPasses(mb.Scheduler):
    """Draws each iteration's critic passes from its own generator: its state must be checkpointed."""

    def __init__(self):
        self.rng = torch.Generator().manual_seed(123)

    def plan(self, iteration, total, metrics=mb.NO_METRICS):
        passes = int(torch.randint(0, 4, (1,), generator=self.rng))
        return mb.Plan(critic_iterations=passes)

    def state_dict(self):
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state):
        self.rng.set_state(state["rng"])


def make_trainer(out_dir):
    return tiny_trainer(scheduler=RandomCriticPasses(), iterations=8, checkpoint_every=4, out_dir=out_dir)


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


class NumpyHorizon(mb.Scheduler):
    """Keeps its horizon as a numpy scalar: ``torch.load(weights_only=True)`` could not read it back."""

    def __init__(self, value):
        self.value = value

    def plan(self, iteration, total, metrics=mb.NO_METRICS):
        return mb.Plan()

    def state_dict(self):
        return {"schedule": {"horizon": self.value}}


@pytest.mark.parametrize("value, kind", [(np.float64(4.0), "numpy.float64"), (np.float32(4.0), "numpy.float32"),
                                         (frozenset({4}), "frozenset")])
def test_a_state_a_checkpoint_cannot_hold_is_refused_when_saved_naming_the_key(tmp_path, value, kind):
    trainer = tiny_trainer(scheduler=NumpyHorizon(value), iterations=1, out_dir=tmp_path)
    with pytest.raises(mb.UserError) as info:
        trainer.save_checkpoint()
    assert str(info.value).startswith(f"scheduler 'NumpyHorizon': state_dict()['schedule']['horizon'] is a {kind}; "
                                      f"a checkpoint holds only tensors and plain Python values")
    assert not (tmp_path / CHECKPOINT).exists()


def test_plain_values_and_tensors_save_and_load_back(tmp_path):
    plain = {"h": 4.0, "n": 3, "on": True, "name": "x", "none": None, "steps": [1, (2, 3)], "t": torch.ones(2),
             "rng": torch.Generator().get_state(), "size": torch.Size([2])}
    trainer = tiny_trainer(scheduler=NumpyHorizon(plain), iterations=1, out_dir=tmp_path)
    trainer.save_checkpoint()
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=True)["components"]["scheduler"]["schedule"]["horizon"]
    assert saved["steps"] == [1, (2, 3)] and saved["h"] == 4.0


def test_the_scheduler_base_declares_state_methods_with_stateless_defaults():
    class Stateless(mb.Scheduler):
        def plan(self, iteration, total, metrics=mb.NO_METRICS):
            return mb.Plan()

    scheduler = Stateless()
    assert scheduler.state_dict() == {}
    scheduler.load_state_dict({})  # nothing saved, nothing to restore
    message = "scheduler 'Stateless': the checkpoint holds its state (keys ['h'])"
    with pytest.raises(mb.UserError, match="^" + re.escape(message)):
        scheduler.load_state_dict({"h": 4})  # saved by a scheduler that kept state: never dropped silently
