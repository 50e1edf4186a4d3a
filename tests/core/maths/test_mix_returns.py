"""The window objectives of ``mbmix_fw.maths.mix_returns`` against explicit mixtures and closed forms (float64)."""
from __future__ import annotations

import pytest
import torch

import mbmix_fw as mb

GAMMA = 0.97


def random_window(steps=12, envs=5, seed=0, p_term=0.1, p_trunc=0.1):
    """Random rewards/values and episode ends, both terminations and truncations, inside the window."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(steps, envs, generator=g, dtype=torch.float64)
    values = torch.randn(steps, envs, generator=g, dtype=torch.float64)
    u = torch.rand(steps, envs, generator=g, dtype=torch.float64)
    terminated = u < p_term
    truncated = (u >= p_term) & (u < p_term + p_trunc)
    return rewards, values, terminated, terminated | truncated


def explicit_mixture(rewards, values, terminated, done, gamma, lam, interval):
    """Slow reference: per env, per segment, Σ_H w_H J_H with every J_H written out.

    A segment of L steps (ended by termination, truncation or the window end) has the candidate
    lengths H = kΔ < L with weights (1-λ)λ^{k-1} and the tail λ^K on J_L (K candidates before L).
    J_H = Σ_{j<H} γ^j r_j + γ^H V(s_H), with V_boot (0 after termination) at H = L.
    """
    steps, envs = rewards.shape
    out = torch.zeros(envs, dtype=torch.float64)
    for n in range(envs):
        start = 0
        for end in range(steps):
            if not (bool(done[end, n]) or end == steps - 1):
                continue
            length = end - start + 1
            r = rewards[start:end + 1, n]
            v = values[start:end + 1, n]

            def j_h(h):
                boot = (0.0 if bool(terminated[end, n]) else v[h - 1]) if h == length else v[h - 1]
                return sum(gamma**i * r[i] for i in range(h)) + gamma**h * boot

            candidates = [h for h in range(interval, length, interval)]
            total = sum((1 - lam) * lam ** (k - 1) * j_h(h) for k, h in enumerate(candidates, 1))
            out[n] += total + lam ** len(candidates) * j_h(length)
            start = end + 1
    return out


@pytest.mark.parametrize("horizon,interval", [(1, 1), (2, 1), (5, 1), (32, 1), (8, 2), (12, 4), (6, 6)])
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.9, 1.0])
def test_weights_sum_to_one_and_follow_the_truncated_geometric_law(horizon, interval, lam):
    w = mb.mix_weights(lam, horizon, interval)
    assert w.shape == (horizon,)
    torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    count = horizon // interval
    for k in range(1, count + 1):
        expected = (1 - lam) * lam ** (k - 1) if k < count else lam ** (count - 1)
        assert w[k * interval - 1].item() == pytest.approx(expected)
    off_grid = [h for h in range(1, horizon + 1) if h % interval]
    assert all(w[h - 1] == 0 for h in off_grid)


def test_weights_reject_bad_arguments():
    with pytest.raises(ValueError):
        mb.mix_weights(0.5, 8, 3)
    with pytest.raises(ValueError):
        mb.mix_weights(1.5, 8, 1)
    with pytest.raises(ValueError):
        mb.mix_weights(0.5, 0, 1)


def test_segment_offsets_restart_after_each_done():
    done = torch.tensor([[0, 0], [1, 0], [0, 0], [0, 1], [1, 0]], dtype=torch.bool)
    assert mb.segment_offsets(done).tolist() == [[0, 0], [1, 1], [0, 2], [1, 3], [2, 0]]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("interval", [1, 2, 3])
def test_fast_mixture_equals_explicit_sum_with_ends_inside_the_window(seed, lam, interval):
    rewards, values, terminated, done = random_window(steps=12, seed=seed)
    assert done.any() and terminated.any() and (done & ~terminated).any()
    fast = mb.mix_objective(rewards, values, terminated, done, GAMMA, lam, interval)
    slow = explicit_mixture(rewards, values, terminated, done, GAMMA, lam, interval)
    torch.testing.assert_close(fast, slow)


def test_full_window_mixture_uses_mix_weights():
    """Without episode ends, one segment per env: J^mix = Σ_H mix_weights[H-1]·J_H."""
    rewards, values, terminated, done = random_window(steps=8, p_term=0, p_trunc=0, seed=4)
    for lam, interval in [(0.7, 1), (0.7, 2), (0.2, 4)]:
        w = mb.mix_weights(lam, 8, interval)
        j = [
            sum(GAMMA**i * rewards[i] for i in range(h)) + GAMMA**h * values[h - 1] for h in range(1, 9)
        ]
        expected = sum(w[h] * j[h] for h in range(8))
        torch.testing.assert_close(mb.mix_objective(rewards, values, terminated, done, GAMMA, lam, interval),
                                   expected)


def test_closed_form_without_episode_ends():
    """method.md §1.3(b): J^mix = Σ_h (γλ)^h r_h + Σ_H w_H γ^H V(s_H)."""
    rewards, values, terminated, done = random_window(steps=10, p_term=0, p_trunc=0, seed=5)
    lam = 0.6
    w = mb.mix_weights(lam, 10)
    closed = sum((GAMMA * lam) ** h * rewards[h] for h in range(10))
    closed = closed + sum(w[h - 1] * GAMMA**h * values[h - 1] for h in range(1, 11))
    torch.testing.assert_close(mb.mix_objective(rewards, values, terminated, done, GAMMA, lam), closed)


@pytest.mark.parametrize("seed", [0, 3])
def test_lambda_one_is_shac_in_value_and_gradient(seed):
    rewards, values, terminated, done = random_window(steps=16, seed=seed)
    rewards.requires_grad_(True)
    values.requires_grad_(True)
    mix = mb.mix_objective(rewards, values, terminated, done, GAMMA, 1.0)
    shac = mb.shac_objective(rewards, values, terminated, done, GAMMA)
    torch.testing.assert_close(mix, shac)
    weights = torch.randn(rewards.shape[1], dtype=torch.float64)
    g_mix = torch.autograd.grad((mix * weights).sum(), (rewards, values))
    g_shac = torch.autograd.grad((shac * weights).sum(), (rewards, values))
    for a, b in zip(g_mix, g_shac):
        torch.testing.assert_close(a, b)


def test_lambda_zero_is_the_one_step_objective_per_segment_start():
    rewards, values, terminated, done = random_window(steps=12, seed=6)
    one_step = rewards + GAMMA * torch.where(terminated, torch.zeros_like(values), values)
    starts = mb.segment_offsets(done) == 0
    expected = torch.where(starts, one_step, torch.zeros_like(one_step)).sum(0)
    torch.testing.assert_close(mb.mix_objective(rewards, values, terminated, done, GAMMA, 0.0), expected)


def test_shac_objective_by_hand():
    """Two envs, three steps: env 0 terminates after step 0, env 1 is truncated after step 1."""
    r = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    v = torch.tensor([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]], dtype=torch.float64)
    term = torch.tensor([[True, False], [False, False], [False, False]])
    done = torch.tensor([[True, False], [False, True], [False, False]])
    g = 0.5
    env0 = (1.0 + g * 0.0) + (3.0 + g * 5.0 + g**2 * 50.0)
    env1 = (2.0 + g * 4.0 + g**2 * 40.0) + (6.0 + g * 60.0)
    torch.testing.assert_close(mb.shac_objective(r, v, term, done, g),
                               torch.tensor([env0, env1], dtype=torch.float64))


def test_unit_interval_recursion_is_lambda_returns_and_all_start_times_sum_them():
    rewards, values, terminated, done = random_window(steps=12, seed=7)
    lam = 0.8
    reference = mb.lambda_returns(rewards, values, terminated, done, GAMMA, lam)
    torch.testing.assert_close(mb.mixed_returns(rewards, values, terminated, done, GAMMA, lam), reference)
    torch.testing.assert_close(
        mb.mix_objective(rewards, values, terminated, done, GAMMA, lam, start_times="all"), reference.sum(0)
    )
    with pytest.raises(ValueError):
        mb.mix_objective(rewards, values, terminated, done, GAMMA, lam, interval=2, start_times="all")
