"""The ``ahac`` scheduler and the contact signal it reads: DiffRL's dual update reproduced step for step,
the trainer's ``contact/stiffness`` metrics, bad settings, and a run on the warp cloth."""
from __future__ import annotations

import math

import pydantic
import pytest
import torch

import mbmix_fw as mb
from mbmix_estimators import Shac, ShacConfig
from mbmix_fw.testing import LinearEnv, tiny_trainer
from mbmix_fw.training.trainer import Trainer
from mbmix_schedulers import Ahac, AhacConfig


def diffrl_reference(stiffness_per_window, steps_min, steps_max, threshold, lr_at):
    """DiffRL ``ahac.py`` transcribed: a λ vector of one dual per step, rebuilt from λ[0] each epoch.
    ``stiffness_per_window(epoch, steps)`` gives the per-step env means ``cfs.mean(-1)`` of that window."""
    H = float(steps_min)
    lambd = torch.zeros(steps_min, dtype=torch.float64)
    horizons, values = [], []
    for epoch in range(len(lr_at)):
        steps = round(H)
        horizons.append(steps)
        values.append(H)
        lambd = lambd[0].repeat(steps)  # init_buffers()
        cfs = stiffness_per_window(epoch, steps)
        lambd = lambd - lr_at[epoch] * (threshold - cfs)
        H = min(max(H + lr_at[epoch] * float(lambd.sum()), steps_min), steps_max)
    return horizons, values


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_the_dual_update_is_diffrls(schedule):
    total, config = 40, AhacConfig(min_horizon=4, max_horizon=20, contact_threshold=2.0, dual_lr=0.05,
                                   dual_lr_schedule=schedule)
    g = torch.Generator().manual_seed(0)
    windows = {}

    def stiffness(epoch, steps):  # stiff at first (above C), soft later, varying within the window
        base = 2.5 if epoch < 12 else 0.5
        return windows.setdefault(epoch, base + torch.rand(steps, generator=g, dtype=torch.float64))

    lr_at = [config.dual_lr + (config.dual_lr / 50 - config.dual_lr) * e / total if schedule == "linear"
             else config.dual_lr for e in range(total)]
    expected, expected_values = diffrl_reference(stiffness, 4, 20, 2.0, lr_at)
    scheduler, metrics, planned = Ahac(config), {}, []
    for iteration in range(total):
        plan = scheduler.plan(iteration, total, metrics)
        planned.append(plan.horizon)
        assert scheduler.horizon == pytest.approx(expected_values[iteration], rel=1e-12, abs=1e-12)
        cfs = windows[iteration]
        assert len(cfs) == plan.horizon
        metrics = {"contact/stiffness": float(cfs.mean()), "contact/stiffness_first_step": float(cfs[0]),
                   "plan/horizon": float(plan.horizon)}
    assert planned == expected
    assert max(planned) > 4  # it rose while stiff (DiffRL's sign)
    if schedule == "constant":
        assert planned[-1] < max(planned)  # and fell once the contacts softened


def test_shorten_when_stiff_flips_the_horizon_step_and_nan_leaves_it():
    config = AhacConfig(min_horizon=4, max_horizon=20, contact_threshold=1.0, dual_lr=0.2, dual_lr_schedule="constant")
    stiff = {"contact/stiffness": 3.0, "contact/stiffness_first_step": 3.0, "plan/horizon": 10.0}
    soft = {**stiff, "contact/stiffness": 0.0, "contact/stiffness_first_step": 0.0}
    grows, shrinks = Ahac(config), Ahac(config.model_copy(update={"horizon_direction": "shorten_when_stiff"}))
    for scheduler in (grows, shrinks):
        scheduler.horizon = 10.0
    for i in range(1, 4):
        grows.plan(i, 10, stiff), shrinks.plan(i, 10, stiff)
    assert grows.horizon > 10 > shrinks.horizon
    before = (grows.horizon, grows.dual)
    grows.plan(4, 10, {**soft, "contact/stiffness": math.nan})
    assert (grows.horizon, grows.dual) == before
    assert grows.plan(0, 10, {}).horizon == round(grows.horizon)  # iteration 0: no update


@pytest.mark.parametrize("bad, field", [
    ({"min_horizon": 16, "max_horizon": 8}, "max_horizon"),
    ({"contact_threshold": 0.0}, "contact_threshold"),
    ({"contact_threshold": -1.0}, "contact_threshold"),
    ({"dual_lr": 0.0}, "dual_lr"),
    ({"min_horizon": 0}, "min_horizon"),
])
def test_bad_settings_fail_validation(bad, field):
    with pytest.raises(pydantic.ValidationError, match=field):
        AhacConfig(**bad)


class ContactLinearEnv(LinearEnv):
    """LinearEnv with a made-up contact signal: |state|₁ of the state before the step."""

    def contact_stiffness(self, state, action, next_state):
        return state.abs().sum(-1)


def test_the_trainer_logs_the_windows_mean_contact_stiffness():
    env = ContactLinearEnv(num_envs=3, episode_length=50)
    trainer = tiny_trainer(env, scheduler=Ahac(AhacConfig(min_horizon=5, max_horizon=5)), horizon=5, iterations=1)
    start = trainer.cursor.state.clone()
    windows = []
    original = trainer.estimator.estimate
    trainer.estimator.estimate = lambda inp: windows.append(original(inp)) or windows[-1]
    trainer.train()
    states = windows[0].rollout.states.detach()
    assert torch.equal(states[0], start)
    row = trainer.log.history[1]
    assert row["contact/stiffness"] == pytest.approx(float(states.abs().sum(-1).mean()), rel=1e-6)
    assert row["contact/stiffness_first_step"] == pytest.approx(float(states[0].abs().sum(-1).mean()), rel=1e-6)


def test_an_env_without_the_contact_signal_is_refused():
    with pytest.raises(mb.UserError, match="env LinearEnv does not report one"):
        Trainer(LinearEnv(), Shac(ShacConfig()), Ahac(AhacConfig()), progress=False)
    assert not mb.reports_contact(LinearEnv()) and mb.reports_contact(ContactLinearEnv())


def test_ahac_adapts_the_cloths_horizon_and_resumes_exactly(tmp_path, crash_after_checkpoint):
    pytest.importorskip("warp")
    from mbmix_warp import ClothFoldConfig, make_cloth_fold

    def make(out):
        env = make_cloth_fold(ClothFoldConfig(num_envs=2, grid_size=4, episode_length=12), mb.BuildContext.cpu())
        scheduler = Ahac(AhacConfig(min_horizon=2, max_horizon=6, contact_threshold=0.1, dual_lr=0.5))
        return tiny_trainer(env, scheduler=scheduler, horizon=16, policy=mb.PolicySettings(hidden=[8], normalize_obs=False),
                            critic={"hidden": [8], "minibatches": 4}, iterations=6, checkpoint_every=3, out_dir=out)

    full = make(tmp_path / "full")
    full.train()
    rows = full.log.history[1:]
    assert rows[0]["plan/horizon"] == 2.0 and rows[0]["contact/stiffness"] > 0.1  # the cloth lies on the ground
    assert rows[-1]["plan/horizon"] > 2.0  # stiffer than C: DiffRL's sign lengthens H
    crash_after_checkpoint(make(tmp_path / "cut"), 3)
    resumed = make(tmp_path / "cut")
    resumed.load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    resumed.train()
    assert [r["plan/horizon"] for r in resumed.log.history[1:]] == [r["plan/horizon"] for r in rows]
    assert (resumed.scheduler.horizon, resumed.scheduler.dual) == (full.scheduler.horizon, full.scheduler.dual)
