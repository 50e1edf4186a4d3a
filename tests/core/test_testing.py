"""``mbmix_fw.testing``: the tiny trainer's documented defaults (tests across the suite rely on them) and the
user-error reader."""
from __future__ import annotations

import pytest

from mbmix_fw.testing import LinearEnv, tiny_trainer, user_error_lines


def test_tiny_trainer_has_its_documented_defaults_and_takes_overrides():
    trainer = tiny_trainer()
    assert (trainer.env.num_envs, trainer.env.episode_length) == (4, 10)
    assert type(trainer.estimator).__name__ == "Shac" and trainer.estimator.config.horizon == 4
    assert type(trainer.scheduler).__name__ == "ModelFree"
    assert (trainer.run.iterations, trainer.run.eval_envs, trainer.run.eval_every, trainer.run.checkpoint_every) \
        == (4, 2, 0, 1000)
    assert (trainer.critic_cfg.iterations, trainer.critic_cfg.minibatches) == (1, 2)
    other = tiny_trainer(LinearEnv(num_envs=8, episode_length=16), horizon=8, critic={"minibatches": 4},
                         iterations=3, seed=5)
    assert other.env.num_envs == 8 and other.estimator.config.horizon == 8
    assert (other.critic_cfg.iterations, other.critic_cfg.minibatches) == (1, 4)
    assert (other.run.iterations, other.run.seed) == (3, 5)


def test_user_error_lines_accepts_only_one_line_errors():
    assert user_error_lines("mbmix-fw: error: a.toml: env.kind: bad\n") == ["a.toml: env.kind: bad"]
    with pytest.raises(AssertionError):
        user_error_lines("Traceback (most recent call last):\nmbmix-fw: error: x\n")
    with pytest.raises(AssertionError):
        user_error_lines("")
