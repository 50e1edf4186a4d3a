"""Trainer with a world model: dyna phases, held-out model errors, exact resume with model and buffer."""
from __future__ import annotations

import math

import pytest
import torch

import mbmix_fw as mb
from mbmix_estimators import Mix, MixConfig
from mbmix_fw.testing import LinearEnv, tiny_trainer
from mbmix_fw.training.trainer import CHECKPOINT
from mbmix_schedulers import Dyna, DynaConfig
from mbmix_world_models import SobolevConfig, make_sobolev


def make_trainer(out_dir=None, iterations=10, env_weight=0.5, warmup=2, alpha=1.0):
    env = LinearEnv(num_envs=8, episode_length=16)
    ctx = mb.BuildContext.cpu().with_env(env)
    model = make_sobolev(SobolevConfig(hidden=[32, 32], probes=2 if alpha else 0, alpha_s=alpha,
                                       alpha_a=alpha, batch_size=64, buffer_capacity=500), ctx)
    scheduler = Dyna(DynaConfig(env_weight=env_weight, model_branches=8, model_fit_steps=4,
                                warmup_iterations=warmup))
    return tiny_trainer(env, Mix(MixConfig(horizon=8, lam=0.9)), scheduler, world_model=model, out_dir=out_dir,
                        critic={"iterations": 2}, iterations=iterations, checkpoint_every=3, eval_envs=4)


def state_tensors(trainer):
    return [t.detach().clone() for t in [*trainer.policy.parameters(), *trainer.critic.parameters(),
                                         *trainer.world_model.parameters()]]


def test_resume_with_world_model_and_buffer_is_exact(tmp_path, crash_after_checkpoint):
    full = make_trainer(tmp_path / "full")
    full.train()
    cut = make_trainer(tmp_path / "cut")
    crash_after_checkpoint(cut, 6)
    resumed = make_trainer(tmp_path / "cut")
    resumed.load_checkpoint(tmp_path / "cut" / CHECKPOINT)
    assert len(resumed.buffer) == len(cut.buffer) > 0
    resumed.train()
    assert all(torch.equal(a, b) for a, b in zip(state_tensors(full), state_tensors(resumed)))
    keep = ("iteration", "loss/actor", "loss/actor_model", "model/loss", "model/jacobian_error")
    strip = lambda rows: [{k: v for k, v in r.items() if k in keep} for r in rows]  # noqa: E731
    assert strip(full.log.history) == strip(resumed.log.history)


def test_pure_model_based_training_moves_the_policy_through_the_model_only():
    trainer = make_trainer(iterations=4, env_weight=0.0, warmup=1)
    trainer.train()
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    trainer.run = mb.RunSettings(iterations=6, checkpoint_every=3, eval_envs=4)
    trainer.train()
    rows = trainer.log.history[-2:]
    assert all("loss/actor_model" in r for r in rows)
    assert all(r["loss/actor"] == pytest.approx(r["loss/actor_model"]) for r in rows)  # β = 0
    assert not all(torch.equal(a, b.detach()) for a, b in zip(before, trainer.policy.parameters()))


def test_model_errors_are_logged_and_the_jacobian_error_falls():
    trainer = make_trainer(iterations=30, env_weight=1.0)
    trainer.train()
    errors = [r["model/jacobian_error"] for r in trainer.log.history if "model/jacobian_error" in r]
    assert len(errors) >= 25 and all(math.isfinite(e) for e in errors)
    assert sum(errors[-5:]) / 5 < 0.5 * sum(errors[:3]) / 3
    assert trainer.log.history[-1]["buffer/size"] == 500  # FIFO capacity reached


def test_mse_only_model_still_reports_jacobian_error():
    trainer = make_trainer(iterations=4, alpha=0.0)
    trainer.train()
    assert trainer.world_model.probes == 0
    assert "model/jacobian_error" in trainer.log.history[-1]


def test_checkpoint_from_another_device_is_refused_with_a_hint(tmp_path):
    trainer = make_trainer(tmp_path, iterations=3)
    trainer.train()
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    state["device"] = "cuda"
    with pytest.raises(mb.UserError, match="resume it with --device cuda"):
        make_trainer(tmp_path).load_state_dict(state)


def test_normalisation_statistics_stay_float64_under_dtype_casts():
    trainer = make_trainer(iterations=1)
    trainer.world_model.to(dtype=torch.float32)
    trainer.obs_norm.to(dtype=torch.float32)
    buffers = [*trainer.obs_norm.buffers(), *trainer.world_model.state_stats.buffers()]
    assert buffers and all(b.dtype == torch.float64 for b in buffers)
