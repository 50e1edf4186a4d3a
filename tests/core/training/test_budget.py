"""``run.env_steps``: a run that stops at an env-step budget, so adaptive-horizon runs compare with fixed-H
runs at equal env steps; the projected ``total`` schedulers see; the last window cut to the budget;
evaluations at env-step multiples; resume; the build check and the data-parallel split."""
from __future__ import annotations

import pytest

import mbmix_fw as mb
from mbmix_estimators import Mix, MixConfig
from mbmix_fw.testing import LinearEnv, tiny_trainer


class Horizons(mb.Scheduler):
    """Plans ``horizons[iteration]`` (the last one after the list runs out) and records each call."""

    horizon_range = (1, 64)

    def __init__(self, *horizons):
        self.horizons, self.calls = list(horizons), []

    def plan(self, iteration, total, metrics):
        self.calls.append((iteration, total))
        return mb.Plan(horizon=self.horizons[min(iteration, len(self.horizons) - 1)])


def make_trainer(scheduler, estimator=None, out_dir=None, **run):
    run.setdefault("iterations", 1000)
    return tiny_trainer(LinearEnv(num_envs=4, episode_length=50), estimator, scheduler, out_dir=out_dir, **run)


def steps_column(trainer):
    return [row["env/steps"] for row in trainer.log.history[1:]]


def test_a_fixed_window_stops_exactly_at_the_budget_and_projects_the_same_total_throughout():
    scheduler = Horizons(4)
    trainer = make_trainer(scheduler, env_steps=80)  # 4 envs × 4 steps = 16 per iteration: 5 iterations
    trainer.train()
    assert trainer.iteration == 5 and trainer.env_steps == 80
    assert scheduler.calls == [(i, 5) for i in range(5)]  # iteration / total is the share of the budget used
    assert steps_column(trainer) == [16.0, 32.0, 48.0, 64.0, 80.0]


def test_without_a_budget_total_is_run_iterations():
    scheduler = Horizons(4)
    make_trainer(scheduler, iterations=3).train()
    assert scheduler.calls == [(0, 3), (1, 3), (2, 3)]


def test_the_projection_follows_the_mean_steps_per_iteration_so_far():
    scheduler = Horizons(2, 2, 6)  # 8, 8, then 24 env steps per iteration
    trainer = make_trainer(scheduler, env_steps=96)
    trainer.train()
    # iteration 0: the estimator's configured window (4 × 4 = 16 per iteration) → 96 / 16 = 6; then 88 left
    # at 8 per iteration → 1 + 11; 80 left at 8 → 2 + 10; then 56 left at (8 + 8 + 24) / 3 → 3 + ⌈4.2⌉
    assert scheduler.calls[:4] == [(0, 6), (1, 12), (2, 12), (3, 8)]
    assert trainer.env_steps == 96


def test_the_last_window_is_cut_to_the_remaining_budget():
    scheduler = Horizons(6)  # 24 per iteration; 60 = 24 + 24 + 12: the third window runs 3 steps
    trainer = make_trainer(scheduler, env_steps=60)
    trainer.train()
    assert [row["plan/horizon"] for row in trainer.log.history[1:]] == [6.0, 6.0, 3.0]
    assert trainer.env_steps == 60


def test_a_cut_window_respects_the_mix_interval():
    scheduler = Horizons(8)  # mix with interval 4: 32 env steps per window; 40 left after one → 8 more steps
    trainer = make_trainer(scheduler, estimator=Mix(MixConfig(horizon=8, interval=4, lam=0.9)), env_steps=44)
    trainer.train()  # 12 remaining → 3 steps needed → rounded up to 4, a multiple of the interval
    assert [row["plan/horizon"] for row in trainer.log.history[1:]] == [8.0, 4.0]
    assert trainer.env_steps == 48


def test_the_iteration_cap_still_stops_a_run_with_a_budget():
    trainer = make_trainer(Horizons(4), env_steps=10_000, iterations=2)  # the CLI refuses this at build
    trainer.train()
    assert trainer.iteration == 2 and trainer.env_steps == 32


def test_evaluations_fall_on_env_step_multiples():
    trainer = make_trainer(Horizons(3), env_steps=72, eval_every_env_steps=24)  # 12 per iteration
    trainer.train()
    evaluated = [row["env/steps"] for row in trainer.log.history[1:] if "eval/return" in row]
    assert evaluated == [24.0, 48.0, 72.0]


def test_a_resumed_budget_run_ends_where_the_uninterrupted_one_does(tmp_path):
    whole = make_trainer(Horizons(2, 5, 3), env_steps=64)
    whole.train()
    first = make_trainer(Horizons(2, 5, 3), out_dir=tmp_path / "a", env_steps=64, iterations=2)
    first.train()
    first.save_checkpoint(tmp_path / "ck.pt")
    resumed = make_trainer(Horizons(2, 5, 3), env_steps=64)
    resumed.load_checkpoint(tmp_path / "ck.pt")
    resumed.train()
    assert resumed.iteration == whole.iteration and resumed.env_steps == whole.env_steps == 64


def test_data_parallel_ranks_split_the_budget():
    from mbmix_fw.distributed.ddp import split_recipe_data

    data = {"run": {"env_steps": 6000}, "env": {"num_envs": 8}}
    assert split_recipe_data(data, 1, 2, "r.toml")["run"]["env_steps"] == 3000
    with pytest.raises(mb.UserError, match="run.env_steps: a budget of 6000 env steps cannot be split evenly over 7"):
        split_recipe_data({"run": {"env_steps": 6000}, "env": {"num_envs": 7}}, 0, 7, "r.toml")
