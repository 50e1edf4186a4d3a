"""The gradient-quality instrument (mbmix_fw/diagnostics/gradient_quality.py, ``mbmix-fw diagnose gradients``):
on the LQR, whose policy gradient is exact, and on a tiny pendulum MB-MIX run folder for the command."""
from __future__ import annotations

import json

import pytest
import torch

from mbmix_fw.building.build import make_trainer
from mbmix_fw.building.recipe import validate_recipe
from mbmix_fw.building.registry import default_registry
from mbmix_fw.commands.cli import main
from mbmix_fw.diagnostics.gradient_quality import GradientQuality, QualitySettings, mean_pairwise_cosine
from mbmix_fw.diagnostics.gradient_statistics import exact_gradient

N, T = 16, 16


@pytest.fixture(scope="module")
def registry():
    return default_registry()


def lqr_trainer(registry, num_envs=N):
    """A model-free LQR trainer with a linear-Gaussian policy (the form whose exact gradient the env has)."""
    recipe = validate_recipe({
        "run": {"seed": 1, "eval_envs": 16},
        "env": {"kind": "lqr", "episode_length": T, "num_envs": num_envs, "action_scale": 0.2},
        "estimator": {"kind": "shac", "horizon": 8, "gamma": 0.99},
        "policy": {"hidden": [], "squash": False, "normalize_obs": False, "init_log_std": -1.0},
        "critic": {"hidden": [8]},
    }, registry)
    return make_trainer(recipe, None, "cpu", registry, progress=False)


def by_kind(instrument, kind):
    return next(c for c in instrument.candidates if c.kind == kind)


def test_an_unbiased_estimator_approaches_the_exact_reference_with_many_samples(registry):
    """BPTT through whole LQR episodes is unbiased for the exact gradient: the cosine of its sample mean to
    the reference (the exact gradient) nears 1 with many samples, well above what one sample reaches; SHAC
    over 2 of 16 steps with an untrained critic is biased and stays far from it however many samples."""
    instrument = GradientQuality(lqr_trainer(registry, num_envs=1), registry,
                                 QualitySettings(samples=64, estimators=("bptt", "shac")))
    result = instrument.measure()
    assert result["reference_note"].startswith("reference: the exact gradient")
    rows = {r["label"]: r for r in result["rows"]}
    bptt = rows[f"bptt T={T}"]
    assert bptt["kind"] == "bptt" and bptt["horizon"] == T
    assert bptt["ref_cosine"] > 0.99
    assert bptt["ref_cosine"] > bptt["ref_cosine_each"] + 0.1  # averaging removes noise, not signal
    assert rows["shac H=2"]["ref_cosine"] < 0.6
    few = GradientQuality(lqr_trainer(registry, num_envs=1), registry, QualitySettings(samples=2, estimators=("bptt",)))
    assert few.measure()["rows"][0]["ref_cosine"] < 0.98


def test_delta_j_has_the_sign_of_a_known_good_direction_and_theta_is_restored(registry):
    trainer = lqr_trainer(registry)
    instrument = GradientQuality(trainer, registry, QualitySettings(samples=2, eta=0.01))
    exact, _ = exact_gradient(trainer.env, trainer.networks.policy, trainer.estimator.gamma)
    before = {k: v.clone() for k, v in trainer.networks.policy.state_dict().items()}
    j0 = instrument.evaluate()
    assert instrument.improvement(exact, j0) > 0
    assert instrument.improvement(-exact, j0) < 0
    for key, value in trainer.networks.policy.state_dict().items():
        assert torch.equal(value, before[key]), key  # bit for bit, not approximately
    assert instrument.evaluate() == j0  # J is deterministic: the same evaluation starts every time


def test_measure_leaves_theta_bit_exact_and_reports_every_row(registry):
    trainer = lqr_trainer(registry)
    before = {k: v.clone() for k, v in trainer.networks.policy.state_dict().items()}
    result = GradientQuality(trainer, registry, QualitySettings(samples=3, estimators=("shac", "mix"))).measure()
    for key, value in trainer.networks.policy.state_dict().items():
        assert torch.equal(value, before[key]), key
    # the mix row takes MixConfig's λ (0.97): the recipe's estimator is shac
    assert [r["label"] for r in result["rows"]] == ["shac H=2", "shac H=4", "shac H=8", "mix λ=0.97 H=8"]
    for row in result["rows"]:
        assert -1 <= row["pair_cosine"] <= 1 and -1 <= row["ref_cosine"] <= 1
        assert row["delta_j_per_1k_calls"] == pytest.approx(
            row["delta_j"] / ((row["sim_steps"] + row["sim_vjps"]) / 1000))


def test_simulator_calls_are_counted_exactly(registry):
    """A SHAC window of H steps from N starts: H·N forward steps and H·N VJPs (the last state feeds the
    critic); BPTT through T steps: T·N steps but (T−1)·N VJPs, as the LQR's reward does not read the last
    next state, so no gradient reaches the simulator's last step."""
    settings = QualitySettings(samples=2, estimators=("shac", "bptt"))
    instrument = GradientQuality(lqr_trainer(registry), registry, settings)
    shac4 = next(c for c in instrument.candidates if c.label == "shac H=4")
    sample = instrument.sample(shac4, 0)
    assert (sample.steps, sample.vjps) == (4 * N, 4 * N)
    bptt = instrument.sample(by_kind(instrument, "bptt"), 0)
    assert (bptt.steps, bptt.vjps) == (T * N, (T - 1) * N)


def test_samples_share_their_start_states_across_estimators(registry):
    """Common random numbers: sample k of SHAC at H and of MIX at λ = 1 (SHAC's gradient, by construction)
    start from the same states with the same noise, so they agree; another seed does not."""
    instrument = GradientQuality(lqr_trainer(registry), registry, QualitySettings(samples=2, estimators=("shac",)))
    shac8 = next(c for c in instrument.candidates if c.label == "shac H=8")
    mix = instrument._build("mix", horizon=8, lam=1.0, gamma=0.99)
    as_mix = type(shac8)("mix λ=1", "mix", 8, instrument._window(mix, 8, lambda s: s))
    torch.testing.assert_close(instrument.sample(shac8, 5).gradient, instrument.sample(as_mix, 5).gradient)
    assert not torch.equal(instrument.sample(shac8, 5).gradient, instrument.sample(shac8, 6).gradient)


def test_mean_pairwise_cosine():
    samples = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]], dtype=torch.float64)
    pairs = [0.0, 2 ** -0.5, 2 ** -0.5]
    assert mean_pairwise_cosine(samples) == pytest.approx(sum(pairs) / 3)


def test_unknown_estimator_is_a_user_error():
    from mbmix_fw.errors import UserError

    with pytest.raises(UserError, match="unknown estimator"):
        QualitySettings(estimators=("shac", "ppo"))


# ---- the command, on a tiny pendulum MB-MIX run folder ----
@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gq") / "pendulum"
    sets = ["run.iterations=3", "run.checkpoint_every=3", "run.eval_every=3", "run.eval_envs=4",
            "env.num_envs=8", "env.episode_length=16", "estimator.horizon=8", "scheduler.warmup_iterations=1",
            "scheduler.model_branches=8", "scheduler.model_fit_steps=2", "scheduler.env_weight=0.7",
            "world_model.hidden=[32]",
            "policy.hidden=[16]", "critic.hidden=[16]"]
    argv = ["run", "recipes/pendulum_mbmix.toml", "--out", str(out), "--no-progress"]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    return out


def test_diagnose_gradients_on_a_run_folder(pendulum_run, tmp_path, capsys):
    json_out, png_out = tmp_path / "q.json", tmp_path / "q.png"
    rc = main(["diagnose", "gradients", str(pendulum_run), "--samples", "2", "--json", str(json_out),
               "--png", str(png_out), "--estimators", "shac", "model_window", "model_branches", "jacobian_blend"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.splitlines()[0].split()[:3] == ["estimator", "steps", "VJPs"]
    saved = json.loads(json_out.read_text())
    rows = {r["kind"]: r for r in saved["rows"]}
    assert set(rows) == {"shac", "model_window", "model_branches", "jacobian_blend"}
    assert rows["model_window"]["sim_steps"] == 0 and rows["model_window"]["delta_j_per_1k_calls"] is None
    assert rows["model_branches"]["sim_steps"] == 8 * 8  # the real window only: branches step the model
    assert rows["jacobian_blend"]["sim_vjps"] == 8 * 8
    assert saved["settings"]["iteration"] == 3 and saved["settings"]["env"] == "pendulum"
    assert png_out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("make", ["missing", "empty", "no_checkpoint_file"])
def test_diagnose_gradients_refuses_a_bad_run_folder_in_one_line(make, pendulum_run, tmp_path, capsys):
    if make == "missing":
        argv = [str(tmp_path / "nowhere")]
    elif make == "empty":
        argv = [str(tmp_path)]
    else:
        argv = [str(pendulum_run), "--checkpoint", str(tmp_path / "none.pt")]
    assert main(["diagnose", "gradients", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mbmix-fw: error: ")


def test_model_branches_mix_the_real_window_and_the_branches_as_the_trainer_does(pendulum_run, registry):
    """The ``model_branches`` sample is ``-H·∇θ(β·L_real + (1−β)·L_branches)``: the real window from the
    sample's starts through the simulator, then branches from buffer states drawn with the same generator
    through the world model (Trainer._iterate's order), at the plan's β and model horizon."""
    from mbmix_fw.contracts.rollout_types import Cursor
    from mbmix_fw.diagnostics.gradient_quality_report import load_run_trainer

    _, trainer = load_run_trainer(pendulum_run, registry)
    instrument = GradientQuality(trainer, registry, QualitySettings(samples=2, estimators=("model_branches",)))
    plan = instrument.plan
    assert 0 < plan.env_weight < 1 and plan.model_branches == 8  # the plan at iteration 3 uses the model
    drawn = instrument.sample(instrument.candidates[0], 11)

    g = torch.Generator().manual_seed(11)
    starts = trainer.env.reset(trainer.env.num_envs, g)
    est = trainer.estimator
    real = est.estimate(instrument._input(trainer.env, Cursor(starts, torch.zeros(8, dtype=torch.long)), g, 8))
    chosen = trainer.model_update.buffer.sample_states(8, g)
    branch = est.estimate(instrument._input(trainer.world_model, Cursor(chosen, None), g, plan.model_horizon or 8))
    loss = plan.env_weight * real.loss + (1 - plan.env_weight) * branch.loss
    params = list(trainer.networks.policy.parameters())
    expected = -8 * torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss, params)]).double()
    torch.testing.assert_close(drawn.gradient, expected)
    assert (drawn.steps, drawn.vjps) == (8 * 8, 8 * 8)  # the real window only: branches step the model


def test_model_branches_use_the_schedulers_beta_when_the_plan_leaves_the_model_out(pendulum_run, registry,
                                                                                 monkeypatch):
    """A checkpoint whose next plan is β = 1 (warm-up or a closed gate) would measure no model at all: the
    row then mixes at the scheduler's env_weight (0.7 here) and says so."""
    import mbmix_fw.diagnostics.gradient_quality as gq
    from mbmix_fw.contracts.scheduler import Plan
    from mbmix_fw.diagnostics.gradient_quality_report import load_run_trainer

    _, trainer = load_run_trainer(pendulum_run, registry)
    monkeypatch.setattr(gq, "_plan_at", lambda trainer: Plan())  # β = 1, no branches
    instrument = GradientQuality(trainer, registry, QualitySettings(samples=2, estimators=("model_branches",)))
    row = instrument.candidates[0]
    assert row.label.startswith("model branches β=0.7 ") and "leaves the model out" in row.note
    monkeypatch.undo()
    planned = GradientQuality(trainer, registry, QualitySettings(samples=2, estimators=("model_branches",)))
    torch.testing.assert_close(instrument.sample(row, 3).gradient, planned.sample(planned.candidates[0], 3).gradient)
