"""Every line of ``DivergenceGuard.step`` (zero, backward, sync, clip, finite checks, skip, step, count,
report) pinned by a test that fails when that line alone breaks."""
from __future__ import annotations

import math

import pytest
import torch

import mbmix_fw as mb
from mbmix_fw.testing import LinearEnv, tiny_trainer

CLIP = 0.5


class NaNGradient(torch.autograd.Function):
    """Identity forward, NaN backward (in ``rows`` of the first axis, or everywhere): a finite loss with a
    non-finite gradient."""

    @staticmethod
    def forward(ctx, x, rows=None):
        ctx.rows = rows
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        grad[... if ctx.rows is None else ctx.rows] = float("nan")
        return grad, None


@pytest.fixture
def trainer():
    env = LinearEnv(num_envs=4, episode_length=8)
    trainer = tiny_trainer(env, optim=mb.OptimSettings(grad_clip=CLIP), iterations=1)
    trainer.guard.begin_iteration()
    return trainer


def critic_loss(trainer, scale=1.0):
    obs = torch.linspace(-1, 1, 12).reshape(4, 3)
    return scale * (trainer.critic(obs) - 3.0).pow(2).mean()


def actor_loss(trainer, nan_rows=()):
    """A loss through the trainer's own policy_fn (with its gradient gate); ``nan_rows`` of the actions get a
    NaN gradient (a simulator whose backward is NaN there)."""
    action = trainer.actor_update.policy_fn(torch.linspace(-1, 1, 12).reshape(4, 3), torch.Generator().manual_seed(0))
    if nan_rows:
        action = NaNGradient.apply(action, list(nan_rows))
    return (action - 0.3).pow(2).sum()


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def moved(before, module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def step(trainer, loss, name="critic", **kwargs):
    module, opt = (trainer.critic, trainer.critic_opt) if name == "critic" else (trainer.policy, trainer.actor_opt)
    return trainer.guard.step(loss, module, opt, name, **kwargs)


def test_a_good_step_moves_counts_clips_and_clears(trainer):
    at_step = []
    trainer.critic_opt.register_step_pre_hook(lambda *_: at_step.append(
        torch.sqrt(sum(p.grad.pow(2).sum() for p in trainer.critic.parameters()))))
    raw = torch.autograd.grad(critic_loss(trainer, 100.0), list(trainer.critic.parameters()))
    raw_norm = torch.sqrt(sum(g.pow(2).sum() for g in raw))
    assert raw_norm > 10 * CLIP
    before = snapshot(trainer.critic)
    norm = step(trainer, critic_loss(trainer, 100.0))
    assert moved(before, trainer.critic)                                 # opt.step
    assert float(norm) == pytest.approx(float(raw_norm), rel=1e-5)       # returns the pre-clip norm
    assert float(at_step[0]) == pytest.approx(CLIP, rel=1e-4)            # clip_grad_norm_ before the step
    assert all(p.grad is None for p in trainer.critic.parameters())      # zero_grad after the step
    skipped, tried = trainer.guard.skips["critic"]
    assert (int(skipped), tried) == (0, 1)                               # the count of tries


def test_stale_gradients_are_cleared_before_backward(trainer):
    for p in trainer.critic.parameters():
        p.grad = torch.full_like(p, float("nan"))  # left over from an unrelated backward
    before = snapshot(trainer.critic)
    assert math.isfinite(float(step(trainer, critic_loss(trainer))))
    assert moved(before, trainer.critic)


@pytest.mark.parametrize("case", ["nan loss, finite gradient", "finite loss, nan gradient", "empty batch"])
def test_a_bad_step_is_skipped_counted_and_reported(trainer, case):
    loss, empty = critic_loss(trainer), None
    if case == "nan loss, finite gradient":
        loss = loss + torch.tensor(float("nan"))  # a constant: the gradient stays finite
    elif case == "finite loss, nan gradient":
        loss = NaNGradient.apply(loss)
    else:
        empty = torch.tensor(True)
    step(trainer, critic_loss(trainer))  # Adam has momentum: a skipped step must not move by it either
    before, state = snapshot(trainer.critic), trainer.critic_opt.state_dict()
    norm = step(trainer, loss, empty=empty)
    assert math.isnan(float(norm))
    assert not moved(before, trainer.critic)
    assert int(trainer.critic_opt.state_dict()["state"][0]["step"]) == int(state["state"][0]["step"])
    skipped, tried = trainer.guard.skips["critic"]
    assert (int(skipped), tried) == (1, 2)


def test_grad_sync_sees_the_gradient_before_clipping_and_the_step_follows_it(trainer):
    seen = []

    def sync(module):  # data-parallel averaging would replace the gradients here
        seen.append(torch.sqrt(sum(p.grad.pow(2).sum() for p in module.parameters())))
        for p in module.parameters():
            p.grad = -torch.ones_like(p)

    trainer.grad_sync = sync
    before = snapshot(trainer.critic)
    step(trainer, critic_loss(trainer, 100.0))
    assert float(seen[0]) > 10 * CLIP
    lr = trainer.critic_opt.param_groups[0]["lr"]
    for a, p in zip(before, trainer.critic.parameters()):  # Adam's first step: lr · sign(-grad)
        torch.testing.assert_close(p.detach() - a, torch.full_like(a, lr), rtol=1e-3, atol=1e-7)


def test_the_actor_report_tells_a_bad_loss_from_a_bad_gradient(trainer):
    step(trainer, actor_loss(trainer) + torch.tensor(float("nan")), "actor")
    assert bool(trainer.guard._bad_actor_loss)
    step(trainer, NaNGradient.apply(actor_loss(trainer)), "actor")
    assert not bool(trainer.guard._bad_actor_loss)


def test_an_actor_backward_with_every_action_row_non_finite_is_skipped(trainer):
    """One NaN row is cut and the others step; all rows NaN would be a zero step that trains nothing, so it is
    skipped — judged on this backward's rows only, not on rows an earlier backward kept."""
    before = snapshot(trainer.policy)
    assert math.isfinite(float(step(trainer, actor_loss(trainer, nan_rows=[2]), "actor")))
    assert moved(before, trainer.policy) and int(trainer.guard._nonfinite_action_grads) == 1
    before = snapshot(trainer.policy)
    assert math.isnan(float(step(trainer, actor_loss(trainer, nan_rows=range(4)), "actor")))
    assert not moved(before, trainer.policy)
    skipped, tried = trainer.guard.skips["actor"]
    assert (int(skipped), tried, int(trainer.guard._nonfinite_action_grads)) == (1, 2, 5)
