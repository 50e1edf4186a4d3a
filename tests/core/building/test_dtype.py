"""float64 end to end: the run's dtype comes from the env (or ``[run] dtype``) and reaches the nets, the
optimiser state, the replay buffer and the world model."""
from __future__ import annotations

import pytest
import torch

import mbmix_fw as mb
from mbmix_fw.building.build import make_trainer

LQR_RECIPE = {
    "run": {"iterations": 24, "eval_envs": 8, "dtype": "float64"},
    "env": {"kind": "lqr", "num_envs": 16, "episode_length": 32, "action_scale": 0.2},
    "estimator": {"kind": "shac", "horizon": 8},
    "scheduler": {"kind": "model_free"},
    "optim": {"lr_schedule": "constant"},
    "policy": {"hidden": [], "squash": False, "normalize_obs": False},
    "critic": {"hidden": [32, 32], "iterations": 4},
}


def floats(tensors):
    return [t for t in tensors if t.is_floating_point()]


def test_lqr_trains_in_float64_from_a_recipe():
    recipe = mb.validate_recipe(LQR_RECIPE, mb.default_registry(), "lqr64")
    trainer = make_trainer(recipe, None, "cpu", mb.default_registry(), progress=False)
    assert trainer.dtype == torch.float64 and trainer.cursor.state.dtype == torch.float64
    final = trainer.train()
    tensors = floats([*trainer.policy.parameters(), *trainer.critic.parameters(),
                      *trainer.target_critic.parameters(), trainer.episodes.running])
    tensors += floats(t for s in trainer.actor_opt.state.values() for t in s.values() if t.dim())
    assert all(t.dtype == torch.float64 for t in tensors)
    assert final["eval/return"] > 0.85 * final["eval/initial_return"], final["eval/return"]  # negative costs: it improves


def test_dyna_buffer_and_world_model_follow_the_env_dtype():
    recipe = mb.validate_recipe({**LQR_RECIPE, "run": {"iterations": 3, "eval_envs": 4},
                                 "scheduler": {"kind": "dyna", "warmup_iterations": 1, "model_branches": 8,
                                               "model_fit_steps": 2},
                                 "estimator": {"kind": "mix", "horizon": 8},
                                 "world_model": {"kind": "sobolev_mlp", "hidden": [16], "batch_size": 32}},
                                mb.default_registry(), "lqr64")
    registry = mb.default_registry()
    env = registry.env.build(recipe.env, mb.BuildContext(dtype=torch.float64))
    model = registry.world_model.build(recipe.world_model, mb.BuildContext(dtype=torch.float64).with_env(env))
    trainer = mb.Trainer(env, registry.estimator.build(recipe.estimator, mb.BuildContext()),
                         registry.scheduler.build(recipe.scheduler, mb.BuildContext()), world_model=model,
                         run=recipe.run, policy=recipe.policy, progress=False)  # run.dtype "auto": the env's
    trainer.train()
    assert trainer.dtype == torch.float64 and len(trainer.buffer) > 0
    assert all(v.dtype == torch.float64 for v in trainer.buffer.state_dict().values() if isinstance(v, torch.Tensor)
               and v.is_floating_point())
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert next(trainer.critic.parameters()).dtype == torch.float64


def test_asking_float64_of_a_float32_env_names_the_field():
    from mbmix_fw.testing import LinearEnv
    from mbmix_estimators import Shac, ShacConfig
    from mbmix_schedulers import ModelFree, ModelFreeConfig

    with pytest.raises(mb.UserError, match="run.dtype: float64"):
        mb.Trainer(LinearEnv(), Shac(ShacConfig()), ModelFree(ModelFreeConfig()),
                   run=mb.RunSettings(dtype="float64"), progress=False)
