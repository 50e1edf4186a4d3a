"""The stiffness task ``wall_push``: its step's gradients against float64 finite differences at low and high
stiffness, the knob doing what its docstring says (the contact Jacobian and the gradient variance over starts
grow with k), the substep rule keeping the explicit integrator stable, and the recipe learning."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest
import torch

import mbmix_fw as mb
import mbmix_toy
from mbmix_fw.testing import check_env
from mbmix_toy import WallPush, WallPushConfig

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def env64(**kw) -> WallPush:
    return WallPush(WallPushConfig(**kw), mb.BuildContext(dtype=F64))


@pytest.mark.parametrize("kw", [{}, {"stiffness": 1e5}, {"contact_smoothing": 0.01}, {"press_force": 2.5, "init_distance": (0.0, 0.02)}],  # press: starts at the wall (a
                         ids=["k1e3", "k1e5", "smooth", "press"])  # free block's reward has no gradient at all)
def test_env_keeps_the_contract(kw):
    check_env(WallPush(WallPushConfig(**kw)))


def test_plugin_registers_wall_push():
    registered = {}
    mbmix_toy.register_envs(lambda cls, factory: registered.setdefault(cls.model_fields["kind"].default, factory))
    env = registered["wall_push"](WallPushConfig(stiffness=50.0), mb.BuildContext.cpu())
    assert isinstance(env, WallPush) and env.config.stiffness == 50.0


def contact_states(env: WallPush, n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """States pressed into the wall by a full push: penetration 0.5–1.5 × the push's rest depth, at rest, so
    the block oscillates about the rest depth without leaving the wall (no kink inside the step)."""
    g = torch.Generator().manual_seed(seed)
    rest = env.config.max_force / env.config.stiffness
    x = rest * (0.5 + torch.rand(n, generator=g, dtype=F64))
    state = torch.stack([x, torch.zeros(n, dtype=F64)], -1)
    return state, torch.ones(n, 1, dtype=F64)


def directional_fd(env, state, action, ds, da, eps):
    plus = env.step(state + eps * ds, action + eps * da)
    minus = env.step(state - eps * ds, action - eps * da)
    return (plus - minus) / (2 * eps)


@pytest.mark.parametrize("stiffness, smoothing", [(1e2, 0.0), (1e5, 0.0), (1e2, 0.02), (1e5, 1e-4)])
def test_step_gradient_matches_central_differences(stiffness, smoothing):
    """Autograd's Jacobian-vector products of ``step`` equal float64 central differences, in contact, at a
    soft and a stiff wall (hard and smoothed contact). The finite difference steps by 1e-5 of the rest depth
    so it stays on one side of every kink."""
    env = env64(stiffness=stiffness, contact_smoothing=smoothing)
    state, action = contact_states(env)
    action = action * 0.9  # inside the clamp, whose kink is at ±1
    g = torch.Generator().manual_seed(1)
    ds, da = torch.randn(state.shape, generator=g, dtype=F64), torch.randn(action.shape, generator=g, dtype=F64)
    ds = ds * torch.tensor([env.config.max_force / stiffness, 1e-2], dtype=F64)
    eps = 1e-5
    _, jvp = torch.func.jvp(lambda s, a: env.step(s, a), (state, action), (ds, da))
    torch.testing.assert_close(jvp, directional_fd(env, state, action, ds, da, eps), rtol=1e-6, atol=1e-9)
    # and the contact is really exercised: the wall's spring moves the step's velocity Jacobian
    free = env64(stiffness=stiffness, contact_smoothing=smoothing)
    free_state = state - torch.tensor([1.0, 0.0], dtype=F64)
    _, free_jvp = torch.func.jvp(lambda s, a: free.step(s, a), (free_state, action), (ds, da))
    assert (jvp - free_jvp).abs().max() > 1e-3


def test_contact_jacobian_grows_like_the_square_root_of_the_stiffness():
    """In contact ``|∂v'/∂x| ≈ ω |sin ωΔ|`` with ``ω = sqrt(k/m)``: over many contact states its mean grows
    about tenfold from k = 1e2 to 1e4 (sqrt of 100); out of contact it does not depend on k."""
    def mean_dv_dx(stiffness, offset=0.0):
        env = env64(stiffness=stiffness)
        state, action = contact_states(env, n=256)
        state = (state - torch.tensor([offset, 0.0], dtype=F64)).requires_grad_(True)
        v_next = env.step(state, action * 0.5)[:, 1]
        return torch.autograd.grad(v_next.sum(), state)[0][:, 0].abs().mean().item()

    soft, stiff = mean_dv_dx(1e2), mean_dv_dx(1e4)
    assert 5 < stiff / soft < 20, (soft, stiff)
    assert mean_dv_dx(1e2, offset=1.0) == mean_dv_dx(1e4, offset=1.0) == 0.0


def window_gradients(stiffness: float, starts: int = 64, horizon: int = 32) -> torch.Tensor:
    """Per-start gradients ``[starts, 3]`` of a ``horizon``-step return w.r.t. a linear-tanh policy's weights
    (each start its own copy of the same weights, so one backward gives every per-start gradient), from
    starts near the wall so the window meets the contact."""
    env = env64(stiffness=stiffness)
    g = torch.Generator().manual_seed(0)
    state = torch.stack([-0.3 * torch.rand(starts, generator=g, dtype=F64),
                         0.5 * torch.randn(starts, generator=g, dtype=F64)], -1)
    w = torch.tensor([-2.0, -1.0, 0.3], dtype=F64).repeat(starts, 1).requires_grad_(True)
    total = torch.zeros((), dtype=F64)
    for _ in range(horizon):
        obs = env.observe(state)
        action = torch.tanh((obs * w[:, :2]).sum(-1, keepdim=True) + w[:, 2:])
        nxt = env.step(state, action)
        total = total + env.reward(state, action, nxt).sum()
        state = nxt
    return torch.autograd.grad(total, w)[0]


def test_gradient_variance_over_starts_grows_with_the_stiffness():
    """The knob's purpose: at k = 1e2 the window gradients of a fixed policy have a small spread across
    starts; at 1e4 the rattling contact makes it several times larger (8x at a2c), at 1e5 it explodes (about
    1e7x: the Jacobians of repeated impacts multiply), and at both the mean is a small fraction of it."""
    soft, stiff, stiffer = window_gradients(1e2), window_gradients(1e4), window_gradients(1e5)
    spread = lambda g: g.std(0).norm().item()  # noqa: E731
    assert spread(stiff) > 5 * spread(soft), (spread(soft), spread(stiff))
    assert spread(stiffer) > 1e3 * spread(stiff), (spread(stiff), spread(stiffer))
    for g in (stiff, stiffer):
        assert g.mean(0).norm().item() < 0.5 * spread(g)


@pytest.mark.parametrize("substeps, stable", [(None, True), (1, False)])
def test_substep_rule_keeps_the_explicit_integrator_stable(substeps, stable):
    """At k = 1e5 one substep per control step has ``h·sqrt(k/m) ≈ 16 > 2``: the contact oscillation grows
    without bound. The derived count (32 at the defaults) keeps it bounded by its initial energy."""
    env = env64(stiffness=1e5, substeps=substeps)
    assert env.substeps == (32 if substeps is None else 1)
    state, action = contact_states(env, n=4)
    for _ in range(20):
        state = env.step(state, action)
    assert bool((state[:, 0].abs() < 1e-3).all()) == stable


def test_substep_count_follows_the_stability_bound():
    for stiffness, expected in [(1e2, 2), (1e3, 4), (1e4, 11), (1e5, 32)]:
        assert WallPushConfig(stiffness=stiffness).substep_count() == expected
    with pytest.raises(pydantic.ValidationError, match="substeps"):
        WallPushConfig(stiffness=1e8, dt=0.5)


def test_contact_stiffness_reads_force_over_acceleration():
    """At rest under a full push at the rest depth, the wall's force balances the push (acceleration ~0, so
    the floor of 1 m/s² applies): the reading is the contact force, 5 N / 1 m/s² = 5 kg. Out of contact: 0."""
    env = env64(stiffness=1e3)
    state = torch.tensor([[5.0 / 1e3, 0.0], [-1.0, 0.0]], dtype=F64)
    reading = env.contact_stiffness(state, torch.ones(2, 1, dtype=F64), state)
    torch.testing.assert_close(reading, torch.tensor([5.0, 0.0], dtype=F64))
    assert mb.reports_contact(env)


@pytest.mark.slow
def test_wall_shac_recipe_learns(tmp_path):
    """The recipe from the CLI, shortened to 30 iterations at its default stiffness: the final evaluation
    beats the initial policy's by a wide margin (seed 0 at a2c: -49.9 -> about -18)."""
    out = tmp_path / "wall"
    done = subprocess.run([sys.executable, "-m", "mbmix_fw", "run", str(ROOT / "recipes" / "wall_shac.toml"),
                           "--out", str(out), "--no-progress", "--set", "run.iterations=30",
                           "--set", "run.eval_every=30"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    returns = [float(r["eval/return"]) for r in csv.DictReader(open(out / "metrics.csv")) if r["eval/return"]]
    assert returns[-1] > returns[0] + 20, returns


def test_stiffness_study_runs_are_valid_recipes_at_equal_env_steps():
    """Every (variant, stiffness) the study launches is a valid recipe with the knob set, the same env-step
    budget (the shipped recipes' own 60 × 16 × 32) and, for ``beta1``, the model never used."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("stiffness_study", ROOT / "benchmarks" / "stiffness_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    shipped = mb.load_recipe(ROOT / "recipes" / "wall_shac.toml")
    assert study.BUDGET == shipped.run.iterations * shipped.estimator.horizon * shipped.env.num_envs
    for variant in study.VARIANTS:
        for stiffness, task in ((1e2, "position"), (1e5, "press")):
            recipe_path, sets = study.settings(variant, stiffness, task)
            recipe = mb.load_recipe(ROOT / recipe_path, overrides=sets)
            assert recipe.env.stiffness == stiffness and recipe.run.env_steps == study.BUDGET
            assert (recipe.env.press_force > 0) == (task == "press")
            if recipe.world_model is not None:
                assert (recipe.scheduler.env_weight == 1.0) == (variant == "beta1")


def _wall_impulse_by_substeps(env: WallPush, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """The step's mean wall force accumulated substep by substep (the integrator written out again, not the
    closed form the env uses)."""
    c = env.config
    h = c.dt / env.substeps
    x, v = state[:, 0].clone(), state[:, 1].clone()
    u = c.max_force * action[:, 0].clamp(-1, 1)
    impulse = torch.zeros_like(x)
    for _ in range(env.substeps):
        wall = env.contact_force(x, v)
        impulse = impulse + h * wall
        v = v + h / c.mass * (u - c.drag * v - wall)
        x = x + h * v
    return impulse / c.dt


@pytest.mark.parametrize("stiffness", [1e2, 1e5])
def test_press_reward_is_the_mean_wall_force_over_the_step(stiffness):
    """The contact task's reward is −((F̄ − F*)/max_force)² − cost·a², F̄ the wall's force averaged over the
    step: zero gradient-free penalty (F*/max_force)² out of contact, the impact's momentum in it. Starts
    straddle the wall (free, touching, inside, arriving fast) so both sides of the contact are exercised."""
    env = env64(stiffness=stiffness, press_force=2.0)
    g = torch.Generator().manual_seed(3)
    state = torch.stack([torch.empty(64, dtype=F64).uniform_(-0.1, 0.02, generator=g),
                         torch.empty(64, dtype=F64).uniform_(-1.0, 3.0, generator=g)], -1)
    action = torch.empty(64, 1, dtype=F64).uniform_(-1.2, 1.2, generator=g)
    next_state = env.step(state, action)
    mean_force = _wall_impulse_by_substeps(env, state, action)
    assert (mean_force == 0).sum() >= 5 and (mean_force > 2.0).sum() >= 5  # free steps and contact steps both
    a = action[:, 0].clamp(-1, 1)
    expected = -(((mean_force - 2.0) / 5.0) ** 2 + 0.01 * a**2)
    torch.testing.assert_close(env.reward(state, action, next_state), expected, rtol=1e-9, atol=1e-9)
    far = torch.tensor([[-1.0, 0.0]], dtype=F64)  # out of contact: the target's full penalty, nothing else
    zero = torch.zeros(1, 1, dtype=F64)
    torch.testing.assert_close(env.reward(far, zero, env.step(far, zero)), torch.tensor([-(2.0 / 5.0) ** 2], dtype=F64))


def test_press_reward_gradient_flows_only_through_contact():
    """With no action cost, a free block's reward does not depend on its push; in contact it does, and the
    gradient through the step matches central differences (float64, stiff wall)."""
    env = env64(stiffness=1e5, press_force=2.0, action_cost=0.0)
    state = torch.tensor([[-1.0, 0.0], [1e-5, 0.3]], dtype=F64)

    def reward(a: torch.Tensor) -> torch.Tensor:
        return env.reward(state, a, env.step(state, a))

    action = torch.tensor([[0.3], [0.3]], dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(reward(action).sum(), action)
    eps = 1e-6
    fd = (reward(action.detach() + eps) - reward(action.detach() - eps)) / (2 * eps)
    torch.testing.assert_close(grad[:, 0], fd, rtol=1e-5, atol=1e-8)
    assert grad[0, 0].abs() < 1e-9 and grad[1, 0].abs() > 1e-3  # free: zero up to rounding


def test_press_force_beyond_the_push_is_refused():
    with pytest.raises(pydantic.ValidationError, match="press_force"):
        WallPushConfig(press_force=6.0, max_force=5.0)
