"""MB-MIX in the trainer: adjoint probes into the buffer, a critic the model cannot mislead, simulator cost
accounting, the Jacobian blend, and the rollback of an exploded world model."""
from __future__ import annotations

import pytest
import torch

import mbmix_fw as mb
from mbmix_estimators import Mix, MixConfig
from mbmix_fw.maths.jacobian_blend import JacobianBlend
from mbmix_fw.maths.adjoint_tap import TappedDynamics
from mbmix_fw.testing import LinearEnv, tiny_trainer
from mbmix_fw.training.world_model_learner import MODEL_EXPLOSION
from mbmix_schedulers import Dyna, DynaConfig
from mbmix_world_models import SobolevConfig, make_sobolev

H, N = 8, 8


def dyna_trainer(iterations=4, probe_source="adjoint", probes=1, branch_steps=0, blend=0.0, warmup=1, run=None,
                 **model):
    env = LinearEnv(num_envs=N, episode_length=16)
    config = SobolevConfig(hidden=[16], probes=probes, probe_source=probe_source, batch_size=32,
                           buffer_capacity=1000, **model)
    world_model = make_sobolev(config, mb.BuildContext.cpu().with_env(env))
    scheduler = Dyna(DynaConfig(env_weight=0.5, model_branches=4, model_fit_steps=2, warmup_iterations=warmup,
                                jacobian_blend=blend))
    return tiny_trainer(env, Mix(MixConfig(horizon=H, lam=0.9)), scheduler, world_model=world_model,
                        critic={"minibatches": 1, "model_branch_steps": branch_steps}, iterations=iterations,
                        **(run or {}))


def test_adjoint_probes_fill_the_buffer_with_the_simulators_own_vjps():
    trainer = dyna_trainer(iterations=3)
    trainer.train()
    buffer, env = trainer.buffer, trainer.env
    batch = buffer.sample(len(buffer), torch.Generator().manual_seed(0))
    assert len(buffer) == 3 * H * N and batch.probe_u.shape[1] == 1
    torch.testing.assert_close(batch.probe_u.norm(dim=-1), torch.ones(len(batch), 1))
    torch.testing.assert_close(batch.probe_s[:, 0], batch.probe_u[:, 0] @ env.A, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch.probe_a[:, 0], batch.probe_u[:, 0] @ env.B, atol=1e-5, rtol=1e-5)


def test_simulator_cost_counts_rollout_steps_backward_vjps_and_probes():
    """SHAC: one forward and one VJP per env step. Random probes add P VJPs (and a recompute) per
    transition; the held-out full-Jacobian evaluation on this small env adds S VJPs per evaluated row."""
    env = LinearEnv(num_envs=N, episode_length=16)
    shac = tiny_trainer(env, horizon=H, critic={"minibatches": 1}, iterations=3)
    last = shac.train()
    assert (last["sim/steps"], last["sim/vjps"]) == (3 * H * N, 3 * H * N)
    assert last["time/wall_s"] > 0

    rows, evaluated = H * N, 2 * H * N  # evaluation from the 2nd iteration on (the buffer must hold data)
    adjoint = dyna_trainer(iterations=3).train()
    assert adjoint["sim/steps"] == 3 * rows + evaluated
    assert adjoint["sim/vjps"] == 3 * rows + evaluated * env.state_dim
    random = dyna_trainer(iterations=3, probe_source="random", probes=2).train()
    assert random["sim/steps"] == 3 * rows + 3 * rows + evaluated
    assert random["sim/vjps"] == 3 * rows + 3 * rows * 2 + evaluated * env.state_dim


@pytest.mark.parametrize("probe_source, probes", [("adjoint", 1), ("random", 2)])
def test_held_out_errors_from_the_windows_probes_cost_no_simulator_call(probe_source, probes):
    """``run.model_error_probes = "window"`` on a small env: the held-out Jacobian errors come from the
    window's own probes, so the simulator work is the windows' (plus random probes, if any) and nothing else,
    and the errors are still reported every iteration after the first."""
    rows = H * N
    trainer = dyna_trainer(iterations=3, probe_source=probe_source, probes=probes,
                           run={"model_error_probes": "window"})
    last = trainer.train()
    probe_vjps = 0 if probe_source == "adjoint" else 3 * rows * probes
    probe_steps = 0 if probe_source == "adjoint" else 3 * rows
    assert last["sim/steps"] == 3 * rows + probe_steps
    assert last["sim/vjps"] == 3 * rows + probe_vjps
    assert 0 <= last["model/jacobian_error_a"] < 10 and 0 <= last["model/jacobian_error_s"] < 10


@pytest.mark.parametrize("branch_steps, expected", [(0, [[H]] * 3), (3, [[H], [H, 3], [H, 3]])])
def test_the_critic_learns_from_real_windows_unless_asked_for_model_steps(branch_steps, expected, monkeypatch):
    trainer = dyna_trainer(iterations=3, branch_steps=branch_steps)
    seen = []
    update = trainer.critic_update.update
    monkeypatch.setattr(trainer.critic_update, "update",
                        lambda rollouts, plan: (seen.append([r.steps for r in rollouts]), update(rollouts, plan))[1])
    trainer.train()
    assert seen == expected


def test_the_real_window_is_tapped_and_blended_as_planned():
    trainer = dyna_trainer(blend=0.3)
    assert isinstance(trainer._real_dynamics(mb.Plan()), TappedDynamics)
    blended = trainer._real_dynamics(mb.Plan(jacobian_blend=0.3))
    assert isinstance(blended, JacobianBlend) and blended.w == 0.3
    assert isinstance(blended.simulator, TappedDynamics) and blended.model is trainer.world_model
    rows = trainer.train()
    assert rows["buffer/size"] == 4 * H * N  # w < 1: the simulator still gets the actor's gradient
    no_model = tiny_trainer(LinearEnv(num_envs=N), horizon=H)
    with pytest.raises(mb.UserError, match="no world model"):
        no_model._real_dynamics(mb.Plan(jacobian_blend=0.5))


def test_an_exploded_world_model_is_rolled_back_to_its_best():
    trainer = dyna_trainer()
    model = trainer.world_model
    trainer.model_update._roll_back_if_exploded(2.0)
    best = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    trainer.model_update._roll_back_if_exploded(2.0 * MODEL_EXPLOSION * 0.99)  # not yet
    assert trainer.model_update.rollbacks == 0 and not torch.equal(best[0], next(model.parameters()))
    trainer.model_update._roll_back_if_exploded(2.0 * MODEL_EXPLOSION * 1.01)
    assert trainer.model_update.rollbacks == 1
    assert all(torch.equal(a, b) for a, b in zip(best, model.parameters()))


@pytest.mark.parametrize("error, beta", [(0.4, 0.75), (0.0, 0.5), (0.8, 1.0), (0.95, 1.0), (None, 1.0)])
def test_dyna_trusts_the_model_as_far_as_its_held_out_error_allows(error, beta):
    scheduler = Dyna(DynaConfig(env_weight=0.5, model_error_gate=0.8, warmup_iterations=2, model_branches=7))
    metrics = {} if error is None else {"model/jacobian_error_a": error}
    plan = scheduler.plan(5, 10, metrics)
    assert plan.env_weight == pytest.approx(beta)
    assert plan.model_branches == (7 if beta < 1 else 0)
    warming = scheduler.plan(1, 10, {"model/jacobian_error_a": 0.0})
    assert (warming.env_weight, warming.model_branches) == (1.0, 0)


def test_branches_run_for_the_model_horizon_from_recent_states(monkeypatch):
    trainer = dyna_trainer(iterations=3)
    trainer.scheduler = Dyna(DynaConfig(env_weight=0.5, model_branches=4, model_fit_steps=1, warmup_iterations=1,
                                        model_horizon=3, branch_recent=5))
    trainer._plan = trainer.scheduler.plan
    seen = []
    estimate = trainer.estimator.estimate
    monkeypatch.setattr(trainer.estimator, "estimate", lambda inp: (seen.append(inp), estimate(inp))[1])
    recent = []
    sample = trainer.buffer.sample_recent_states
    monkeypatch.setattr(trainer.buffer, "sample_recent_states",
                        lambda n, k, g: (recent.append(k), sample(n, k, g))[1])
    trainer.train()
    branches = [inp for inp in seen if inp.dynamics is trainer.world_model]
    assert len(branches) == 2 and all(inp.horizon == 3 for inp in branches) and recent == [5, 5]
    assert trainer.log.history[-1]["plan/horizon"] == H  # the real window keeps the estimator's horizon


def test_recent_states_come_from_the_newest_transitions_only():
    buffer = mb.ReplayBuffer(6, 1, 1)
    for start in (0, 4, 8):  # wraps around: rows hold 6..11 after the last add
        values = torch.arange(start, start + 4, dtype=torch.float32).unsqueeze(-1)
        buffer.add(mb.TransitionBatch(values, values, values))
    drawn = buffer.sample_recent_states(200, 3, torch.Generator().manual_seed(0))
    assert set(drawn.squeeze(-1).tolist()) == {9.0, 10.0, 11.0}


@pytest.mark.parametrize("probe_source", ["random", "adjoint"])
def test_diverged_but_finite_transitions_are_kept_out_of_buffer_critic_and_counted(probe_source, monkeypatch):
    """Above the env's ``diverged_magnitude`` is the same as NaN: masked in the actor, left out of the
    replay buffer, the critic's regression and the normaliser, and counted."""
    trainer = dyna_trainer(iterations=2, probe_source=probe_source)
    bound = trainer.env.diverged_magnitude = 3.0  # LinearEnv's states pass it in some envs, finitely
    seen = []
    targets = trainer.critic_update.targets
    monkeypatch.setattr(trainer.critic_update, "targets", lambda rs: (seen.append(targets(rs)), seen[-1])[1])
    rows = [trainer._read_metrics(trainer._iterate(trainer._plan(i, 2, {}))) for i in range(2)]
    masked = sum(int(r["guard/nonfinite_transitions"]) for r in rows)
    assert 0 < masked < 2 * H * N and all(r["guard/masked_envs"] > 0 for r in rows)
    assert trainer.guard.nonfinite_transitions == masked
    assert sum(int((~valid).sum()) for _, _, valid in seen) == masked
    batch = trainer.buffer.sample(len(trainer.buffer), torch.Generator().manual_seed(0))
    assert len(trainer.buffer) > 0 and float(batch.next_state.abs().max()) <= bound  # LinearEnv observes s
    if probe_source == "random":  # every finite row enters the buffer, no other
        assert len(trainer.buffer) == 2 * H * N - masked


@pytest.mark.parametrize("env_weight", [0.0, 0.5])
def test_the_models_share_of_the_actor_step_is_logged(env_weight):
    trainer = dyna_trainer(iterations=3)
    trainer.scheduler = Dyna(DynaConfig(env_weight=env_weight, model_branches=4, model_fit_steps=2,
                                        warmup_iterations=1))
    trainer._plan = trainer.scheduler.plan
    rows = trainer.train() and trainer.log.history[1:]
    clip = trainer.optim_cfg.grad_clip
    assert rows[0]["model/grad_share"] == 0 and rows[0]["model/update_norm"] == 0  # warm-up: no branch
    for row in rows[1:]:
        norm, lr = row["grad/actor_norm"], row["lr/actor"]
        assert row["grad/update_norm"] == pytest.approx(lr * min(1.0, clip / (norm + 1e-6)) * norm, rel=1e-5)
        if env_weight == 0:  # every bit of the step is the model's
            assert row["model/grad_share"] == pytest.approx(1.0)
            assert row["model/update_norm"] == pytest.approx(row["grad/update_norm"], rel=1e-5)
        else:
            assert 0 < row["model/grad_share"] < 1 and 0 < row["model/update_norm"] < row["grad/update_norm"]


def test_a_model_free_run_logs_no_model_share():
    env = LinearEnv(num_envs=N, episode_length=16)
    rows = tiny_trainer(env, horizon=H, iterations=1).train()
    assert "model/grad_share" not in rows


def test_dyna_warms_up_in_env_steps_when_asked():
    scheduler = Dyna(DynaConfig(env_weight=0.5, warmup_iterations=100, warmup_env_steps=1000, model_branches=3))
    assert scheduler.plan(0, 10, {}).env_weight == 1.0
    assert scheduler.plan(50, 100, {"env/steps": 999.0}).env_weight == 1.0
    after = scheduler.plan(2, 100, {"env/steps": 1000.0})
    assert (after.env_weight, after.model_branches) == (0.5, 3)


def test_dyna_can_gate_on_both_jacobian_blocks():
    both = Dyna(DynaConfig(env_weight=0.5, warmup_iterations=0, model_error_gate=0.8, gate_on="both"))
    action = Dyna(DynaConfig(env_weight=0.5, warmup_iterations=0, model_error_gate=0.8))
    errors = {"model/jacobian_error_a": 0.4, "model/jacobian_error_s": 0.9}
    assert action.plan(3, 10, errors).env_weight == pytest.approx(0.75)
    assert both.plan(3, 10, errors).env_weight == 1.0  # the state block is past the gate


def test_the_fit_budget_follows_the_data():
    trainer = dyna_trainer(iterations=2)
    trainer.scheduler = Dyna(DynaConfig(env_weight=0.5, model_branches=4, model_fit_steps=1,
                                        model_fit_per_transition=1.0, warmup_iterations=1))
    trainer._plan = trainer.scheduler.plan
    trainer.train()
    added = H * N  # the adjoint tap feeds every real transition of the window
    assert [r["model/fit_steps"] for r in trainer.log.history[1:]] == [1 + added // 32] * 2  # batch_size 32


@pytest.mark.parametrize("change", [dict(model_fit_steps=6), dict(alpha_s=0.0, alpha_a=0.0)])
def test_how_the_model_is_fitted_leaves_the_real_windows_random_numbers_alone(change):
    """A model fitted but never used (β = 1) draws from its own streams: a longer fit or an MSE fit leaves
    the run's real windows, and so the policy, bit-identical (the paired design of the ablations)."""
    def run(model_fit_steps=2, **model):
        trainer = dyna_trainer(iterations=3, probe_source="random", **model)
        trainer.scheduler = Dyna(DynaConfig(env_weight=1.0, model_fit_steps=model_fit_steps))
        trainer._plan = trainer.scheduler.plan
        trainer.train()
        return trainer
    base, other = run(), run(**change)
    assert all(torch.equal(a, b) for a, b in zip(base.policy.parameters(), other.policy.parameters()))
    assert [r.get("train/return") for r in base.log.history] == [r.get("train/return") for r in other.log.history]
    assert not all(torch.equal(a, b) for a, b in zip(base.world_model.parameters(), other.world_model.parameters()))
