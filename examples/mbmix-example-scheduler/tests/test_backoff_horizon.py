"""The plugin's own tests: it registers its kind, refuses an empty range, follows its rule from the metrics
it is given, drives the trainer's window length, and resumes its schedule from a checkpoint."""
import math

import pytest
import torch
from pydantic import ValidationError

import mbmix_fw as mb
from mbmix_fw.testing import LinearEnv

import mbmix_example_scheduler as plugin


def test_registers_its_scheduler_kind():
    registry = mb.make_registry(plugin)
    assert not registry.failures
    scheduler = registry.scheduler.build(plugin.BackoffHorizonConfig(min_horizon=2, max_horizon=6),
                                         mb.BuildContext.cpu())
    assert isinstance(scheduler, plugin.BackoffHorizon) and scheduler.horizon_range == (2, 6)


def test_an_empty_range_is_refused():
    with pytest.raises(ValidationError, match="max_horizon=3 is below min_horizon=5"):
        plugin.BackoffHorizonConfig(min_horizon=5, max_horizon=3)


def test_additive_increase_multiplicative_decrease():
    scheduler = plugin.BackoffHorizon(plugin.BackoffHorizonConfig(min_horizon=3, max_horizon=20, step=2,
                                                                   max_grad_norm=1.0))
    norms = [None, 5.0, 0.5, 0.5, math.nan, 0.1, 9.0, 9.0, 9.0]
    planned = [scheduler.plan(i, 9, {} if n is None else {"grad/actor_norm": n}).horizon
               for i, n in enumerate(norms)]
    assert planned == [20, 10, 12, 14, 7, 9, 4, 3, 3]


def make_trainer(out_dir=None, iterations=6):
    from mbmix_estimators import Shac, ShacConfig  # a built-in estimator, shipped with mbmix-fw

    scheduler = plugin.BackoffHorizon(plugin.BackoffHorizonConfig(min_horizon=2, max_horizon=8,
                                                                   max_grad_norm=0.05))
    return mb.Trainer(LinearEnv(num_envs=4, episode_length=12), Shac(ShacConfig(horizon=8)), scheduler,
                      run=mb.RunSettings(iterations=iterations, eval_envs=2, eval_every=0, checkpoint_every=3),
                      critic=mb.CriticSettings(iterations=1), out_dir=out_dir, progress=False,
                      # constant: a run cut at 3 iterations and extended learns at the uninterrupted one's
                      # rates (a linear schedule decays over each run's own total)
                      optim=mb.OptimSettings(lr_schedule="constant"))


def test_the_plan_sets_the_trainers_window():
    trainer = make_trainer()
    trainer.train()
    rows = trainer.log.history[1:]
    assert rows[0]["plan/horizon"] == 8.0
    for previous, row in zip(rows, rows[1:]):  # each window follows the rule from the row before it
        expected = min(8, previous["plan/horizon"] + 1) if previous["grad/actor_norm"] <= 0.05 else \
            max(2, previous["plan/horizon"] // 2)
        assert row["plan/horizon"] == expected
    assert len({row["plan/horizon"] for row in rows}) > 1


def test_a_resumed_run_plans_what_the_uninterrupted_one_did(tmp_path):
    full = make_trainer(tmp_path / "full")
    full.train()
    first = make_trainer(tmp_path / "cut", iterations=3)
    first.train()  # a run of 3 iterations writes its checkpoint at iteration 3, as a killed run would have
    resumed = make_trainer(tmp_path / "cut")
    resumed.load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert resumed.scheduler.horizon == first.scheduler.horizon
    resumed.train()
    assert [r.get("plan/horizon") for r in resumed.log.history] == [r.get("plan/horizon") for r in full.log.history]
    assert all(torch.equal(a, b) for a, b in zip(full.policy.parameters(), resumed.policy.parameters()))
