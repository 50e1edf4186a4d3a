"""The actor learns past one bad env: a diverged env's window is left out of the actor objective and its
non-finite gradient rows are cut before the parameters, so the other envs' gradient is exact; a run in which
no env can train stops. The divergence bound is the env's own (``DiffEnv.diverged_magnitude``)."""
from __future__ import annotations

import math

import pytest
import torch

import mbmix_fw as mb
from mbmix_estimators import Bptt, BpttConfig, Mix, MixConfig, Shac, ShacConfig
from mbmix_fw.testing import LinearEnv, tiny_trainer

N, H = 8, 8


class _NaNBackward(torch.autograd.Function):
    """Identity forward; backward NaN in the rows of ``rows`` (a simulator whose adjoint blows up)."""

    @staticmethod
    def forward(ctx, x, rows):
        ctx.rows = rows
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        grad[ctx.rows] = float("nan")
        return grad, None


class BadEnv(LinearEnv):
    """LinearEnv whose training batch (``N`` rows) has broken rows ``rows``: ``forward`` sends their reached
    state to NaN at every step; ``backward`` keeps the forward finite and makes the step's adjoint NaN.
    Evaluation batches (another size) are clean, so ``eval/return`` measures the policy."""

    def __init__(self, rows, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.rows, self.mode = list(rows), mode

    def step(self, state, action, generator=None):
        next_state = super().step(state, action, generator)
        if state.shape[0] != N or not self.rows:
            return next_state
        if self.mode == "backward":
            return _NaNBackward.apply(next_state, self.rows)
        poison = torch.zeros_like(next_state)
        poison[self.rows] = float("nan")
        return next_state + poison


def trainer_for(env, estimator=None, iterations=1, **run):
    return tiny_trainer(env, estimator, horizon=H, critic={"iterations": 2}, iterations=iterations, eval_envs=4,
                        **{"checkpoint_every": 50, **run})


def actor_gradient(trainer, env, starts, estimator):
    """∂loss/∂θ of one window from ``starts`` with the deterministic policy, through the trainer's gradient
    gate (the hook its own policy_fn registers)."""
    def policy_fn(obs, generator):
        action = trainer.policy(trainer.networks.normalize(obs), deterministic=True)
        action.register_hook(trainer.guard._zero_nonfinite_rows)
        return action

    trainer.guard.begin_iteration()
    cursor = mb.Cursor(starts, torch.zeros(starts.shape[0], dtype=torch.long))
    estimate = estimator.estimate(mb.EstimatorInput(policy_fn, trainer.critic_update.target_value, env, env, cursor))
    trainer.policy.zero_grad(set_to_none=True)
    estimate.loss.backward()
    grads = [p.grad.clone() for p in trainer.policy.parameters() if p.grad is not None]
    return estimate, grads


ESTIMATORS = {"shac": lambda: Shac(ShacConfig(horizon=H)), "mix": lambda: Mix(MixConfig(horizon=H, lam=0.9)),
              "bptt": lambda: Bptt(BpttConfig())}


@pytest.mark.parametrize("kind", ESTIMATORS)
def test_one_nan_env_leaves_the_others_gradient_exact(kind):
    """With env 0's states NaN at every step, the actor gradient is exactly that of envs 1..7 alone."""
    estimator = ESTIMATORS[kind]()
    bad = BadEnv([0], "forward", num_envs=N, episode_length=H)
    trainer = trainer_for(bad, estimator)
    starts = bad.reset(N, torch.Generator().manual_seed(3))
    estimate, grads = actor_gradient(trainer, bad, starts, estimator)
    assert math.isfinite(float(estimate.loss.detach()))
    assert mb.healthy_envs(estimate.rollout, bad).tolist() == [False] + [True] * 7
    assert int(trainer.guard._nonfinite_action_grads) > 0  # the NaN·0 rows were there, and were cut
    clean = LinearEnv(num_envs=N - 1, episode_length=H)
    if kind == "bptt":  # BPTT resets its own episodes: give it the same seven starts
        clean.reset = lambda n, generator=None: starts[1:]
        bad.reset = lambda n, generator=None: starts
    _, reference = actor_gradient(trainer, clean, starts[1:], estimator)
    if kind == "bptt":
        _, grads = actor_gradient(trainer, bad, starts, estimator)
    assert len(grads) == len(reference) > 0
    for g, r in zip(grads, reference):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)  # float32 sums in another order


def test_cut_gradient_rows_are_logged(caplog):
    env = BadEnv([0], "backward", num_envs=N, episode_length=16)
    trainer_for(env, iterations=1).train()
    assert "iteration 1: 8 non-finite action-gradient row(s) cut; 0 updates skipped; 0 so far" in caplog.text


def test_a_nan_simulator_backward_never_reaches_the_parameters():
    """Forward finite, adjoint NaN in env 0: env 0 stays in the objective (its return is fine) but its
    gradient rows are cut, so the gradient is the 7 clean envs' sum over the 8-env normalisation."""
    estimator = Shac(ShacConfig(horizon=H))
    bad = BadEnv([0], "backward", num_envs=N, episode_length=H)
    trainer = trainer_for(bad, estimator)
    starts = bad.reset(N, torch.Generator().manual_seed(3))
    estimate, grads = actor_gradient(trainer, bad, starts, estimator)
    assert mb.healthy_envs(estimate.rollout, bad).all() and int(trainer.guard._nonfinite_action_grads) == H
    _, reference = actor_gradient(trainer, LinearEnv(num_envs=N - 1, episode_length=H), starts[1:], estimator)
    for g, r in zip(grads, reference):
        torch.testing.assert_close(g, r * (N - 1) / N, rtol=1e-4, atol=1e-6)


def test_with_one_env_nan_every_iteration_the_actor_still_learns():
    env = BadEnv([0], "forward", num_envs=N, episode_length=16)
    trainer = trainer_for(env, iterations=25, max_skipped_iterations=3)
    final = trainer.train()
    rows = trainer.log.history[1:]
    assert all(r["guard/masked_envs"] == 1 for r in rows)
    assert trainer.guard.skipped_updates == 0 and all(math.isfinite(r["grad/actor_norm"]) for r in rows)
    # LinearEnv's return is -Σ|s|²: the untrained policy scores -995 on the 4 eval episodes, the trained one
    # -26 (the same as a run with no bad env: -26); half of that improvement is the bar
    assert final["eval/return"] > final["eval/initial_return"] + 0.5 * abs(final["eval/initial_return"])
    assert all(torch.isfinite(p).all() for p in trainer.policy.parameters())


@pytest.mark.parametrize("mode, message", [
    ("forward", "every update of the last 3 iterations was skipped"),  # no env left: actor and critic skip
    ("backward", "the actor update of the last 3 iterations was skipped"),  # every adjoint NaN: critic fine
])
def test_a_run_in_which_every_env_diverges_stops(mode, message):
    env = BadEnv(range(N), mode, num_envs=N, episode_length=16)
    trainer = trainer_for(env, iterations=20, max_skipped_iterations=3)
    with pytest.raises(mb.TrainingDiverged, match=message):
        trainer.train()
    assert trainer.iteration == 3
    assert all(torch.isfinite(p).all() for p in trainer.policy.parameters())


def test_the_actor_streak_ends_at_an_actor_step():
    env = BadEnv(range(N), "backward", num_envs=N, episode_length=16)
    trainer = trainer_for(env, iterations=2, max_skipped_iterations=3)
    trainer.train()
    assert trainer.guard.actor_skip_streak == 2 and trainer.guard.skipped_streak == 0
    env.rows = []
    trainer.run = mb.RunSettings(iterations=3, eval_envs=4, max_skipped_iterations=3)
    trainer.train()
    assert trainer.guard.actor_skip_streak == 0
    assert trainer.state_dict()["actor_skip_streak"] == 0


# ---- the divergence bound is the env's
class SmallBoundEnv(LinearEnv):
    diverged_magnitude = 5.0


def test_the_divergence_bound_is_the_envs():
    obs = torch.tensor([[1.0, 4.0], [6.0, 0.0]])
    finite = torch.zeros(2)
    assert mb.rollout.__module__ == "mbmix_fw.maths.rollouts"
    from mbmix_fw.maths.rollouts import diverged

    assert diverged(finite, obs, obs).tolist() == [False, False]  # DiffRL's default 1e6
    assert diverged(finite, obs, obs, bound=5.0).tolist() == [False, True]
    assert mb.safe_values(lambda o: o.sum(-1), obs, bound=5.0).tolist() == [5.0, 0.0]
    env = SmallBoundEnv(state_dim=2, num_envs=2, episode_length=4)
    trainer = trainer_for(env)
    assert trainer.critic_update.target_value(obs)[1] == 0 and trainer.critic_update.target_value(obs)[0] != 0
    # in a rollout: the row that leaves the bound terminates (and resets) and its env is masked
    start = mb.Cursor(torch.tensor([[1.0, 0.0], [100.0, 0.0]]), torch.zeros(2, dtype=torch.long))
    window = mb.rollout(lambda o, g: torch.zeros(2, 2), env, env, start, 2)
    assert window.terminated[0].tolist() == [False, True]
    assert mb.healthy_envs(window, env).tolist() == [True, False]
    assert window.states[1, 1].abs().max() < 5  # reset to a fresh state


def test_cloth_declares_a_bound_on_its_scale():
    pytest.importorskip("warp")
    from mbmix_warp.cloth import ClothFold

    assert ClothFold.diverged_magnitude == 1e3 < mb.DiffEnv.diverged_magnitude == 1e6


def test_the_split_half_policy_of_the_agree_scheduler_gates_nan_action_gradients_too():
    """With the gradient-agreement scheduler the window runs through per-half policy copies: a NaN adjoint in
    one env is still cut before the parameters, and both halves' gradients stay finite."""
    from mbmix_schedulers import Agree, AgreeConfig

    bad = BadEnv([0], "backward", num_envs=N, episode_length=H)
    trainer = tiny_trainer(bad, scheduler=Agree(AgreeConfig(min_horizon=H, max_horizon=H)), horizon=H,
                           iterations=2, eval_envs=4)
    trainer.train()
    rows = trainer.log.history[1:]
    assert all(r["guard/nonfinite_action_grads"] == H for r in rows)
    assert all(math.isfinite(r["grad/half_cosine"]) and math.isfinite(r["grad/actor_norm"]) for r in rows)


class NaNEvalEnv(LinearEnv):
    """LinearEnv whose evaluation batches (not ``N`` rows) send their first episode to NaN."""

    def step(self, state, action, generator=None):
        next_state = super().step(state, action, generator)
        if state.shape[0] == N:
            return next_state
        poison = torch.zeros_like(next_state)
        poison[0] = float("nan")
        return next_state + poison


def test_a_nonfinite_evaluation_episode_is_counted_and_left_out_of_the_mean():
    trainer = trainer_for(NaNEvalEnv(num_envs=N, episode_length=16), iterations=1)
    rows = trainer.log.history if trainer.train() else None
    last = rows[-1]
    assert last["eval/nonfinite_episodes"] == 1 and math.isfinite(last["eval/return"])
    returns = trainer.evaluation_returns()
    assert not math.isfinite(float(returns[0]))
    assert last["eval/return"] == pytest.approx(float(returns[1:].mean()))
