"""Non-finite simulator output: masked out of the normaliser, the critic and the replay buffer, counted,
never checkpointed; a run that can only skip stops with an error naming what went non-finite first."""
from __future__ import annotations

import math

import pytest
import torch

import mbmix_fw as mb
from mbmix_estimators import Mix, MixConfig
from mbmix_fw.training.checkpoint import load_checkpoint_file
from mbmix_fw.testing import LinearEnv, tiny_trainer
from mbmix_fw.training.trainer import CHECKPOINT
from mbmix_schedulers import Dyna, DynaConfig
from mbmix_world_models import SobolevConfig, make_sobolev

N, H = 8, 8


class NaNOnceEnv(LinearEnv):
    """LinearEnv whose ``poison_call``-th real-window step sends env 0 to a NaN state (once).

    Real-window steps are the batch-sized ones taken with autograd on: the rollout's, whether through the
    fused ``transition`` or, with a world model (adjoint tap), through ``step`` then ``score``; evaluation
    runs without autograd and Jacobian probes on other batch sizes, so neither shifts the count."""

    def __init__(self, poison_call: int, **kwargs):
        super().__init__(**kwargs)
        self.poison_call, self.calls = poison_call, 0

    def step(self, state, action, generator=None):
        next_state = super().step(state, action, generator)
        if state.shape[0] != self.num_envs or not torch.is_grad_enabled():
            return next_state
        self.calls += 1
        if self.calls != self.poison_call:
            return next_state
        blow_up = torch.zeros(state.shape[0], 1, dtype=state.dtype)
        blow_up[0] = float("nan")
        return next_state + blow_up


class AlwaysNaNEnv(LinearEnv):
    """Every reward is NaN: nothing can ever be learned."""

    def reward(self, state, action, next_state):
        return super().reward(state, action, next_state) * float("nan")


def model_free(env, out_dir=None, iterations=6, **run):
    return tiny_trainer(env, horizon=H, out_dir=out_dir, critic={"iterations": 2}, iterations=iterations,
                        checkpoint_every=2, eval_envs=4, **run)


def dyna(env, out_dir=None, iterations=6):
    model = make_sobolev(SobolevConfig(hidden=[32, 32], probes=2, probe_source="random", batch_size=64,
                                       buffer_capacity=1000),
                         mb.BuildContext.cpu().with_env(env))
    return tiny_trainer(env, Mix(MixConfig(horizon=H, lam=0.9)),
                        Dyna(DynaConfig(env_weight=0.5, model_branches=8, model_fit_steps=3, warmup_iterations=1)),
                        world_model=model, out_dir=out_dir, critic={"iterations": 2}, iterations=iterations,
                        checkpoint_every=2, eval_envs=4)


def all_finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def check_poisoned_run(trainer, tmp_path, iterations):
    final = trainer.train()
    rows = [r for r in trainer.log.history[1:]]
    assert [r["guard/nonfinite_transitions"] for r in rows] == [0, 1] + [0] * (iterations - 2)
    assert trainer.guard.nonfinite_transitions == 1
    # the normaliser saw every transition but the broken one
    assert trainer.obs_norm.count.item() == pytest.approx(1e-5 + iterations * H * N - 1)
    assert all_finite([*trainer.obs_norm.buffers(), *trainer.policy.parameters(), *trainer.critic.parameters(),
                       *trainer.target_critic.parameters(), trainer.cursor.state, trainer.episodes.running])
    assert math.isfinite(final["eval/return"]) and math.isfinite(final["loss/critic"])
    state = load_checkpoint_file(tmp_path / CHECKPOINT)
    for name in ("policy", "critic", "target_critic", "obs_norm"):
        assert all_finite(state[name].values()), name
    for name in ("actor_opt", "critic_opt"):
        assert all_finite(t for moments in state[name]["state"].values() for t in moments.values()), name
    return state


def test_one_nan_state_model_free_is_masked_counted_and_training_goes_on(tmp_path):
    env = NaNOnceEnv(poison_call=H + 3, num_envs=N, episode_length=12)  # iteration 2, env 0
    trainer = model_free(env, tmp_path)
    check_poisoned_run(trainer, tmp_path, 6)
    # the poisoned env's window is left out of the actor objective and its NaN gradient rows are cut, so the
    # actor still steps on the other 7 envs; every critic step runs
    rows = trainer.log.history[1:]
    assert [r["guard/masked_envs"] for r in rows] == [0, 1, 0, 0, 0, 0]
    assert rows[1]["guard/nonfinite_action_grads"] > 0 and rows[0]["guard/nonfinite_action_grads"] == 0
    assert math.isfinite(rows[1]["grad/actor_norm"]) and rows[1]["grad/actor_norm"] > 0
    assert trainer.guard.skipped_updates == 0 and trainer.guard.first_nonfinite.startswith("iteration 2: 1 simulator")
    assert trainer.guard.skipped_streak == 0 and trainer.guard.actor_skip_streak == 0


def test_one_nan_state_with_dyna_never_reaches_buffer_or_model(tmp_path):
    env = NaNOnceEnv(poison_call=H + 3, num_envs=N, episode_length=12)
    trainer = dyna(env, tmp_path)
    state = check_poisoned_run(trainer, tmp_path, 6)
    assert len(trainer.buffer) == 6 * H * N - 1  # every finite transition, not the broken one
    assert all_finite(state["buffer"][k] for k in ("state", "action", "next_state", "probe_s", "probe_a"))
    assert all_finite([*trainer.world_model.parameters(), *trainer.world_model.buffers()])
    assert all_finite(v for v in state["world_model"].values() if isinstance(v, torch.Tensor))


def test_a_world_model_fit_that_goes_nonfinite_is_undone_and_counted():
    env = LinearEnv(num_envs=N, episode_length=12)
    trainer = dyna(env, iterations=3)
    trainer.train()
    model = trainer.world_model
    kept = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    fit = model.fit

    def exploding_fit(batch):
        out = fit(batch)
        with torch.no_grad():
            model.net.weights[0].fill_(float("inf"))
        return out

    model.fit = exploding_fit
    trainer.run = mb.RunSettings(iterations=4, eval_envs=4)
    trainer.train()
    assert trainer.log.history[-1]["guard/skipped_updates"] == 3  # the iteration's three fit steps
    restored = model.state_dict()
    assert all(torch.equal(v, restored[k]) for k, v in kept.items())


def test_sobolev_fit_skips_a_nonfinite_batch_and_keeps_its_statistics():
    env = LinearEnv(num_envs=N)
    model = make_sobolev(SobolevConfig(hidden=[16], probes=1, batch_size=8), mb.BuildContext.cpu().with_env(env))
    batch = mb.collect_transitions(env, env.reset(8), torch.rand(8, env.action_dim), 1)
    model.fit(batch)
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    bad = mb.TransitionBatch(batch.state, batch.action, batch.next_state, batch.probe_u,
                             batch.probe_s * float("nan"), batch.probe_a)
    assert model.fit(bad)["model/skipped"] == 1.0
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_a_run_that_can_only_skip_stops_naming_the_first_nonfinite(tmp_path):
    trainer = model_free(AlwaysNaNEnv(num_envs=N, episode_length=12), tmp_path, iterations=50,
                         max_skipped_iterations=3)
    with pytest.raises(mb.TrainingDiverged, match=r"last 3 iterations.*first non-finite: iteration 1: 64 "
                                                  r"simulator transition"):
        trainer.train()
    assert trainer.iteration == 3
    final = trainer.log.final_metrics()
    assert math.isnan(final["eval/initial_return"])  # the true evaluation, NaN


def test_final_metrics_report_a_nan_last_evaluation():
    trainer = model_free(LinearEnv(num_envs=N, episode_length=12), iterations=2)
    # a finite initial evaluation, a final one whose every episode is NaN
    evaluations = iter([torch.tensor([-5.0, -5.0]), torch.tensor([float("nan"), float("nan")])])
    trainer.evaluator.returns = lambda episodes=None: next(evaluations)
    final = trainer.train()
    assert final["eval/initial_return"] == -5.0 and math.isnan(final["eval/return"])
    assert trainer.log.history[-1]["eval/nonfinite_episodes"] == 2


def test_nothing_nonfinite_is_checkpointed(tmp_path):
    trainer = model_free(LinearEnv(num_envs=N, episode_length=12), tmp_path, iterations=2)
    trainer.train()
    good = (tmp_path / CHECKPOINT).read_bytes()
    with torch.no_grad():
        next(trainer.target_critic.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(mb.TrainingDiverged, match="target_critic"):
        trainer.save_checkpoint()
    assert (tmp_path / CHECKPOINT).read_bytes() == good


def test_bootstrap_value_is_zero_for_nonfinite_or_diverged_observations():
    obs = torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [2e6, 0.0], [float("inf"), 1.0]], requires_grad=True)
    values = mb.safe_values(lambda o: o.sum(-1) * 10, obs)
    assert values.tolist() == [30.0, 0.0, 0.0, 0.0]
    values.sum().backward()
    assert torch.isfinite(obs.grad).all() and obs.grad[1:].abs().sum() == 0


def test_the_estimators_value_fn_zeroes_broken_observations():
    trainer = model_free(LinearEnv(state_dim=2, num_envs=N), iterations=1)
    obs = torch.tensor([[0.5, -0.5], [float("nan"), 0.0], [-3e6, 1.0]], requires_grad=True)
    values = trainer._estimator_input(trainer.env, trainer.cursor).value_fn(obs)
    expected = trainer.target_critic(trainer.obs_norm.normalize(obs[:1].detach()))[0]
    assert torch.allclose(values[0], expected) and expected != 0
    assert values[1:].tolist() == [0.0, 0.0]
    values.sum().backward()
    assert torch.isfinite(obs.grad).all()
