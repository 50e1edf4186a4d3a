"""The plugin's own tests: it registers its kind, the objective is the mean of the truncated windows (checked
against mbmix-fw's SHAC objective and exact gradients), and an estimate trains a policy end to end."""
import torch

import mbmix_fw as mb
from mbmix_fw.testing import LinearEnv

import mbmix_example_estimator as plugin


def test_registers_its_estimator_kind():
    registry = mb.make_registry(plugin)
    assert not registry.failures
    estimator = registry.estimator.build(plugin.UniformMixConfig(horizon=5), mb.BuildContext.cpu())
    assert isinstance(estimator, plugin.UniformMix) and estimator.horizon(None) == 5


def window(T=6, N=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=g, dtype=torch.float64, requires_grad=True)
    values = torch.randn(T, N, generator=g, dtype=torch.float64)
    return rewards, values


def test_objective_is_the_mean_of_the_shac_windows():
    rewards, values = window()
    never = torch.zeros(rewards.shape, dtype=torch.bool)
    ours = plugin.uniform_mix_objective(rewards, values, never, never, 0.9)
    windows = [mb.shac_objective(rewards[:h], values[:h], never[:h], never[:h], 0.9) for h in range(1, 7)]
    torch.testing.assert_close(ours, torch.stack(windows).mean(0))


def test_an_episode_end_splits_the_window_into_segments():
    rewards, values = window(T=5, N=1)
    done = torch.tensor([[False], [True], [False], [False], [False]])
    terminated = done.clone()  # the episode failed after step 1: its bootstrap is 0
    ours = plugin.uniform_mix_objective(rewards, values, terminated, done, 0.9)
    first = (rewards[0] + 0.9 * values[0] + rewards[0] + 0.9 * rewards[1]) / 2
    never = torch.zeros(3, 1, dtype=torch.bool)
    second = torch.stack([mb.shac_objective(rewards[2:2 + h], values[2:2 + h], never[:h], never[:h], 0.9)
                          for h in (1, 2, 3)]).mean(0)
    torch.testing.assert_close(ours, first + second)


def test_gradient_with_respect_to_rewards_is_exact():
    # d/dr_k (1/H) Σ_h Σ_{j<h} γ^j r_j = γ^k (H - k) / H
    rewards, values = window(T=6, N=2)
    never = torch.zeros(rewards.shape, dtype=torch.bool)
    plugin.uniform_mix_objective(rewards, values, never, never, 0.9).sum().backward()
    k = torch.arange(6, dtype=torch.float64)
    expected = (0.9 ** k * (6 - k) / 6).unsqueeze(1).expand(6, 2)
    torch.testing.assert_close(rewards.grad, expected)


def test_an_estimate_trains_a_policy():
    from mbmix_schedulers import ModelFree, ModelFreeConfig  # a built-in scheduler, shipped with mbmix-fw

    env = LinearEnv(num_envs=8, episode_length=16)
    trainer = mb.Trainer(env, plugin.UniformMix(plugin.UniformMixConfig(horizon=8)), ModelFree(ModelFreeConfig()),
                         run=mb.RunSettings(iterations=3, eval_envs=2), critic=mb.CriticSettings(iterations=2),
                         progress=False)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    final = trainer.train()
    assert torch.isfinite(torch.tensor(final["eval/return"])) and final["guard/skipped_updates"] == 0
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, trainer.policy.parameters()))
