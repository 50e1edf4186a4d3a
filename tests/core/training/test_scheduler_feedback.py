"""Schedulers that see the run: ``plan(iteration, total, metrics)``, ``Plan.horizon`` / ``Plan.lam``,
one ``plan`` call per iteration, exact resume of a stateful adaptive scheduler, and the horizon checks."""
from __future__ import annotations

import re

import pytest
import torch

import mbmix_fw as mb
from mbmix_estimators import Bptt, BpttConfig, Mix, MixConfig, Shac, ShacConfig
from mbmix_fw.testing import LinearEnv, tiny_trainer
from mbmix_fw.training.trainer import CHECKPOINT, Trainer


class Recorder(mb.Scheduler):
    """Records what it was asked and seen; plans ``horizons[iteration]`` (None when the list runs out)."""

    horizon_range, plans_lam = (1, 10), True

    def __init__(self, horizons=(), lams=()):
        self.horizons, self.lams, self.calls = list(horizons), list(lams), []

    def plan(self, iteration, total, metrics):
        self.calls.append((iteration, total, metrics))
        pick = lambda values: values[iteration] if iteration < len(values) else None  # noqa: E731
        return mb.Plan(horizon=pick(self.horizons), lam=pick(self.lams))




def test_plan_sees_the_previous_iterations_metrics_read_only():
    scheduler = Recorder()
    trainer = tiny_trainer(scheduler=scheduler, iterations=3)
    assert scheduler.calls == []  # building the trainer plans nothing
    trainer.train()
    assert [(i, t) for i, t, _ in scheduler.calls] == [(0, 3), (1, 3), (2, 3)]  # once per iteration, no more
    assert dict(scheduler.calls[0][2]) == {}
    for (_, _, seen), row in zip(scheduler.calls[1:], trainer.log.history[1:]):  # history[0]: initial eval
        assert dict(seen) == {k: v for k, v in row.items() if k != "iteration"}
        assert {"loss/actor", "grad/actor_norm", "plan/horizon", "env/steps"} <= set(seen)
    with pytest.raises(TypeError):
        scheduler.calls[1][2]["loss/actor"] = 0.0


def test_a_world_model_trainer_also_plans_nothing_at_construction():
    from mbmix_world_models import SobolevConfig, make_sobolev

    env = LinearEnv(num_envs=4, episode_length=10)
    model = make_sobolev(SobolevConfig(hidden=[8], probes=1, batch_size=8, buffer_capacity=64),
                         mb.BuildContext.cpu().with_env(env))
    scheduler = Recorder()
    Trainer(env, Shac(ShacConfig(horizon=4)), scheduler, world_model=model, run=mb.RunSettings(iterations=2),
            progress=False)
    assert scheduler.calls == []


def test_plan_horizon_sets_the_window_its_metric_and_the_step_count():
    horizons = [1, 3, 2, 7]
    trainer = tiny_trainer(scheduler=Recorder(horizons), iterations=4)
    trainer.train()
    rows = trainer.log.history[1:]
    assert [r["plan/horizon"] for r in rows] == horizons
    assert [r["env/steps"] for r in rows] == [4.0 * sum(horizons[:i + 1]) for i in range(4)]
    assert all(r["plan/env_weight"] == 1.0 for r in rows) and "plan/lam" not in rows[0]  # shac has no λ


def _one_estimate(estimator, horizon=None, lam=None):
    env = LinearEnv(num_envs=3, episode_length=6)
    g = torch.Generator().manual_seed(0)
    policy = torch.nn.Linear(env.obs_dim, env.action_dim)
    value = torch.nn.Linear(env.obs_dim, 1)
    start = mb.Cursor(env.reset(3, g), torch.zeros(3, dtype=torch.long))
    inp = mb.EstimatorInput(policy_fn=lambda obs, _g: torch.tanh(policy(obs)),
                            value_fn=lambda obs: value(obs).squeeze(-1), env=env, dynamics=env, start=start,
                            generator=g, horizon=horizon, lam=lam)
    return estimator.estimate(inp)


@pytest.mark.parametrize("make", [
    lambda h, lam: Shac(ShacConfig(horizon=h)),
    lambda h, lam: Mix(MixConfig(horizon=h, lam=lam)),
    lambda h, lam: Bptt(BpttConfig(horizon=h)),
])
def test_a_planned_horizon_and_lam_equal_the_configured_ones(make):
    torch.manual_seed(0)
    planned = _one_estimate(make(8, 0.9), horizon=5, lam=0.3 if isinstance(make(8, 0.9), Mix) else None)
    torch.manual_seed(0)
    configured = _one_estimate(make(5, 0.3))
    assert planned.rollout.steps == 5
    torch.testing.assert_close(planned.loss, configured.loss, rtol=0, atol=0)


def test_mix_reports_and_honours_the_planned_lam():
    trainer = tiny_trainer(scheduler=Recorder(lams=[0.2, None]), estimator=Mix(MixConfig(horizon=4, lam=0.9)), iterations=2)
    trainer.train()
    assert [r["plan/lam"] for r in trainer.log.history[1:]] == [0.2, 0.9]
    torch.manual_seed(0)
    a = _one_estimate(Mix(MixConfig(horizon=4, lam=0.9)), lam=0.2)
    torch.manual_seed(0)
    b = _one_estimate(Mix(MixConfig(horizon=4, lam=0.9)))
    assert not torch.equal(a.loss, b.loss)


@pytest.mark.parametrize("plan", [dict(horizon=0), dict(horizon=True), dict(horizon=2.0), dict(lam=1.5),
                                  dict(lam=float("nan")), dict(horizon=mb.MAX_STEPS + 1)])
def test_plan_refuses_out_of_range_values(plan):
    with pytest.raises(ValueError):
        mb.Plan(**plan)


@pytest.mark.parametrize("estimator, declared, plan, message", [
    (Bptt(BpttConfig()), (1, 11), mb.Plan(horizon=11),
     "planned horizon 11, outside [1, 10], the window lengths estimator 'bptt' honours"),
    (Shac(ShacConfig(horizon=4)), None, mb.Plan(lam=0.5), "planned lam 0.5 but estimator 'shac' mixes no windows"),
    (Mix(MixConfig(horizon=4, interval=2)), (1, 8), mb.Plan(horizon=5),
     "planned horizon 5, not a multiple of 2, which estimator 'mix' needs"),
    (Shac(ShacConfig(horizon=4)), (4, 8), mb.Plan(horizon=64),
     "planned horizon 64, outside its declared horizon_range (4, 8)"),
])
def test_a_plan_that_cannot_be_honoured_stops_before_any_update(estimator, declared, plan, message):
    """Research code builds the trainer without the build's declaration checks: the plan is still refused
    before the iteration runs, naming the scheduler the one way every message names it."""
    class Fixed(mb.Scheduler):
        horizon_range, plans_lam = declared, True

        def plan(self, iteration, total, metrics):
            return plan

    trainer = tiny_trainer(scheduler=Fixed(), estimator=estimator)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    with pytest.raises(mb.UserError, match="^" + re.escape(f"scheduler 'Fixed' (iteration 0) {message}")):
        trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    assert trainer.env_steps == 0


@pytest.mark.parametrize("plan, message", [
    (mb.Plan(horizon=4), "planned horizon 4 but declares no horizon_range"),
    (mb.Plan(lam=0.5), "planned lam 0.5 but does not declare plans_lam = True"),
])
def test_a_plan_beyond_what_the_scheduler_declares_stops_before_the_iteration(plan, message):
    class Undeclared(mb.Scheduler):
        def plan(self, iteration, total, metrics):
            return plan

    trainer = tiny_trainer(scheduler=Undeclared(), estimator=Mix(MixConfig(horizon=4)))
    with pytest.raises(mb.UserError, match="^" + re.escape(f"scheduler 'Undeclared' (iteration 0) {message}")):
        trainer.train()
    assert trainer.env_steps == 0


def test_a_plan_leaving_its_declared_range_midway_stops_that_iteration():
    """An adaptive scheduler that breaks its own declaration later in the run is stopped at that
    iteration, before it runs, naming the scheduler and the iteration."""
    trainer = tiny_trainer(scheduler=Recorder(horizons=[2, 3, 64]), iterations=4)
    with pytest.raises(mb.UserError, match="^scheduler 'Recorder' \\(iteration 2\\) planned horizon 64, "
                                           "outside its declared horizon_range \\(1, 10\\)"):
        trainer.train()
    assert trainer.iteration == 2 and trainer.env_steps == 4 * (2 + 3)


class GrowOnProgress(mb.Scheduler):
    """Adaptive and stateful: lengthens H when the last actor loss fell, with a random jitter from its
    own generator, so its state (last loss, H, RNG) must survive a resume for the plans to match."""

    horizon_range = (1, 8)

    def __init__(self):
        self.horizon, self.last_loss, self.rng = 2, None, torch.Generator().manual_seed(7)

    def plan(self, iteration, total, metrics):
        loss = metrics.get("loss/actor")
        if loss is not None and self.last_loss is not None:
            self.horizon = min(8, self.horizon + 1) if loss < self.last_loss else max(1, self.horizon - 1)
        self.last_loss = loss
        jitter = int(torch.randint(0, 2, (1,), generator=self.rng))
        return mb.Plan(horizon=max(1, self.horizon - jitter))

    def state_dict(self):
        return {"horizon": self.horizon, "last_loss": self.last_loss, "rng": self.rng.get_state()}

    def load_state_dict(self, state):
        self.horizon, self.last_loss = state["horizon"], state["last_loss"]
        self.rng.set_state(state["rng"])


def test_a_stateful_adaptive_scheduler_resumes_with_the_same_plans(tmp_path, crash_after_checkpoint):
    full = tiny_trainer(scheduler=GrowOnProgress(), iterations=8, out_dir=tmp_path / "full", checkpoint_every=4)
    full.train()
    crash_after_checkpoint(tiny_trainer(scheduler=GrowOnProgress(), iterations=8, out_dir=tmp_path / "cut",
                                        checkpoint_every=4), 4)
    resumed = tiny_trainer(scheduler=GrowOnProgress(), iterations=8, out_dir=tmp_path / "cut", checkpoint_every=4)
    resumed.load_checkpoint(tmp_path / "cut" / CHECKPOINT)
    resumed.train()
    planned = [r["plan/horizon"] for r in full.log.history[1:]]
    assert len(set(planned)) > 1  # the schedule did adapt
    assert [r["plan/horizon"] for r in resumed.log.history[1:]] == planned
    assert [r["env/steps"] for r in resumed.log.history[1:]] == [r["env/steps"] for r in full.log.history[1:]]
    for a, b in zip(full.policy.parameters(), resumed.policy.parameters()):
        assert torch.equal(a, b)


def test_resume_hands_the_last_checkpointed_row_to_the_next_plan(tmp_path, crash_after_checkpoint):
    crash_after_checkpoint(tiny_trainer(scheduler=Recorder(), iterations=6, out_dir=tmp_path, checkpoint_every=3), 3)
    scheduler = Recorder()
    resumed = tiny_trainer(scheduler=scheduler, iterations=6, out_dir=tmp_path, checkpoint_every=3)
    resumed.load_checkpoint(tmp_path / CHECKPOINT)
    resumed.train()
    first_iteration, _, seen = scheduler.calls[0]
    row = resumed.log.history[3]
    assert first_iteration == 3 and row["iteration"] == 3.0
    assert dict(seen) == {k: v for k, v in row.items() if k != "iteration"}


def test_report_plots_the_horizon_of_each_iteration(tmp_path):
    from mbmix_fw.commands.report import read_metrics, write_report

    tiny_trainer(scheduler=Recorder([2, 5, 3]), iterations=3, out_dir=tmp_path / "run").train()
    assert read_metrics(tmp_path / "run")["plan/horizon"][1:].tolist() == [2.0, 5.0, 3.0]
    out, _ = write_report([tmp_path / "run"], tmp_path / "h.png", metric="plan/horizon")
    assert out.stat().st_size > 0
