"""The warp cloth (plugin ``warp``, env ``cloth_fold``): gradients against float64 finite differences,
the forward against an independent torch re-implementation, the DiffEnv contract, memory retained for
backward, long rollouts, and bad settings.

One module-scoped env (a 4×4 cloth) is shared: the warp module compiles once per process (and is cached
on disk), so the whole file costs seconds after the first compile.
"""
from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("warp", reason="the [warp] extra is installed in CI (README test command)")

import mbmix_fw as mb  # noqa: E402
from mbmix_fw.testing import check_env  # noqa: E402
from mbmix_warp import ClothFoldConfig, make_cloth_fold  # noqa: E402
from mbmix_warp.ground import ground_force  # noqa: E402

F64 = torch.float64


def make_env(**fields):
    return make_cloth_fold(ClothFoldConfig(**fields), mb.BuildContext.cpu())


@pytest.fixture(scope="module")
def env():
    return make_env(num_envs=3, grid_size=4, substeps=8)


def settled(env, n=3, steps=4, seed=0):
    """float64 states after a few still steps: the cloth rests on the ground, in contact."""
    s = env.reset(n, torch.Generator().manual_seed(seed)).to(F64)
    for _ in range(steps):
        s = env.step(s, torch.zeros(n, env.action_dim, dtype=F64))
    return s.detach()


def actions(env, n, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.rand(steps, n, env.action_dim, generator=g, dtype=F64) - 1) * 0.9


def rollout_dot(env, s, acts, u):
    for a in acts:
        s = env.step(s, a)
    return (s * u).sum()


# ---------------------------------------------------------------- gradients
def test_gradients_over_three_steps_match_float64_finite_differences(env):
    """Steps in ground contact (the cloth rests on it, with friction) and with the grippers moving."""
    s0 = settled(env)
    x, _, _ = env.split(s0)
    radius, width = env.config.particle_radius, env.config.contact_width
    in_contact = (x[..., 2] < radius + 2 * width).double().mean()
    assert in_contact > 0.5, "the check must exercise the contact force"
    acts = actions(env, 3, 3)
    g = torch.Generator().manual_seed(2)
    u = torch.randn(s0.shape, generator=g, dtype=F64)
    leaf_s, leaf_a = s0.clone().requires_grad_(True), acts.clone().requires_grad_(True)
    grad_s, grad_a = torch.autograd.grad(rollout_dot(env, leaf_s, leaf_a, u), (leaf_s, leaf_a))
    assert grad_a.abs().sum() > 0 and grad_s.abs().sum() > 0
    eps = 1e-7  # the error of central differences falls as eps² down to here (contact is stiff)
    for _ in range(3):  # random directions in state and action space together
        ds = torch.randn(s0.shape, generator=g, dtype=F64)
        da = torch.randn(acts.shape, generator=g, dtype=F64)
        with torch.no_grad():
            numeric = (rollout_dot(env, s0 + eps * ds, acts + eps * da, u)
                       - rollout_dot(env, s0 - eps * ds, acts - eps * da, u)) / (2 * eps)
        auto = (grad_s * ds).sum() + (grad_a * da).sum()
        assert float(abs(auto - numeric)) <= 1e-7 * max(1.0, float(abs(numeric))), (float(auto), float(numeric))


def test_gradient_of_each_state_block_matches_finite_differences(env):
    """Positions, velocities and gripper positions separately (a wrong adjoint of one block shows here)."""
    s0 = settled(env, n=2)
    a = actions(env, 2, 1)[0]
    u = torch.randn(s0.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    leaf = s0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((env.step(leaf, a) * u).sum(), leaf)
    P = env.particles
    for block in (slice(0, 3 * P), slice(3 * P, 6 * P), slice(6 * P, None)):
        d = torch.zeros_like(s0)
        d[:, block] = torch.randn(d[:, block].shape, generator=torch.Generator().manual_seed(4), dtype=F64)
        with torch.no_grad():
            numeric = ((env.step(s0 + 1e-7 * d, a) - env.step(s0 - 1e-7 * d, a)) * u).sum() / 2e-7
        assert float(abs((grad * d).sum() - numeric)) <= 1e-7 * max(1.0, float(abs(numeric)))


def test_no_hidden_gradient_clipping(env):
    """The vector-Jacobian product is linear in the incoming gradient, at any scale."""
    s0 = settled(env).requires_grad_(True)
    a = actions(env, 3, 1)[0].requires_grad_(True)
    out = env.step(s0, a)
    u = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    small = torch.autograd.grad(out, (s0, a), u, retain_graph=True)
    large = torch.autograd.grad(out, (s0, a), 1e9 * u)
    for g_small, g_large in zip(small, large):
        torch.testing.assert_close(g_large, 1e9 * g_small, rtol=1e-12, atol=0)


def test_backward_leaves_the_incoming_gradient_untouched(env):
    s0 = settled(env).requires_grad_(True)
    out = env.step(s0, torch.zeros(3, env.action_dim, dtype=F64))
    u = torch.randn(out.shape, generator=torch.Generator().manual_seed(6), dtype=F64)
    kept = u.clone()
    torch.autograd.grad(out, s0, u)
    assert torch.equal(u, kept)


def test_memory_retained_for_backward_does_not_grow_with_substeps():
    """The graph keeps only each step's inputs; the substeps are recomputed inside backward."""
    def saved_numel(substeps: int) -> int:
        env = make_env(num_envs=2, grid_size=4, substeps=substeps)
        s = env.reset(2).requires_grad_(True)
        a = torch.zeros(2, env.action_dim, requires_grad=True)
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            env.step(s, a)
        return total

    few, many = saved_numel(8), saved_numel(64)
    assert few == many
    assert few <= 4 * make_env(num_envs=2, grid_size=4).state_dim  # a few copies of the step's input


# ---------------------------------------------------------------- the forward
def reference_substep(c: ClothFoldConfig, x, v, grip, grip_vel, held, elapsed):
    """One substep of the documented model, written independently in torch with an explicit spring list."""
    n = c.grid_size
    h = c.cloth_size / (n - 1)
    m = c.mass / n**2
    springs = []
    for p in range(n * n):
        for q in range(p + 1, n * n):
            dr, dc = abs(p // n - q // n), abs(p % n - q % n)
            kind = {(0, 1): c.stretch_stiffness, (1, 0): c.stretch_stiffness, (1, 1): c.shear_stiffness,
                    (0, 2): c.bend_stiffness, (2, 0): c.bend_stiffness}.get((dr, dc))
            if kind is not None:
                springs.append((p, q, kind, h * math.hypot(dr, dc)))
    force = torch.zeros_like(x)
    force[:, 2] -= c.gravity * m
    force -= c.drag * m * v
    for p, q, k, rest in springs:
        d = x[q] - x[p]
        length = torch.sqrt(d @ d + 1e-12)
        unit = d / length
        f = unit * (k * (length - rest) + c.spring_damping * ((v[q] - v[p]) @ unit))
        force[p] += f
        force[q] -= f
    force += ground_force(c, x, v)  # the documented contact law (mbmix_warp.ground), tested below on its own
    dt = c.dt / c.substeps
    v_new = v + force * dt / m
    x_new = x + v_new * dt
    for g, p in enumerate(held):
        x_new[p] = grip[g] + grip_vel[g] * elapsed
        v_new[p] = grip_vel[g]
    return x_new, v_new


def test_forward_equals_an_independent_torch_reference_on_a_3x3_cloth():
    c = ClothFoldConfig(num_envs=2, grid_size=3, substeps=3, dt=0.015, grippers=[(0, 0)])
    env = make_cloth_fold(c, mb.BuildContext.cpu())
    gen = torch.Generator().manual_seed(7)
    s = env.reset(2, gen).to(F64)
    s[:, 3 * 9:6 * 9] = 0.2 * torch.randn(2, 27, generator=gen, dtype=F64)  # moving, some particles lifting
    s[:, :27] += 0.01 * torch.randn(2, 27, generator=gen, dtype=F64)
    a = torch.tensor([[0.5, -0.3, 0.8], [-0.2, 0.1, -0.6]], dtype=F64)
    out = env.step(s, a)
    x, v, grip = env.split(s)
    for e in range(2):
        xe, ve = x[e].clone(), v[e].clone()
        grip_next = grip[e] + c.dt * c.max_speed * a[e].reshape(1, 3)
        grip_next[:, 2] = grip_next[:, 2].clamp(min=c.particle_radius)  # the ground stops the gripper
        grip_vel = (grip_next - grip[e]) / c.dt
        for k in range(c.substeps):
            xe, ve = reference_substep(c, xe, ve, grip[e], grip_vel, env.held, (k + 1) * c.dt / c.substeps)
        xo, vo, go = env.split(out[e:e + 1])
        torch.testing.assert_close(xo[0], xe, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(vo[0], ve, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(go[0], grip_next, rtol=1e-12, atol=1e-14)


def test_the_ground_never_pulls_and_its_damping_vanishes_with_the_penetration():
    """Hunt–Crossley (mbmix_warp.ground): normal force max(0, k·δ - d·W·tanh(k·δ/W)·v_z), W = m·g. Under the
    Kelvin–Voigt damping it replaced, a particle touching the ground and leaving it faster than k·δ/c
    (~0.16 m/s) was pulled down."""
    c = ClothFoldConfig()
    z = torch.linspace(c.particle_radius - 0.004, c.particle_radius + 0.012, 17, dtype=F64)  # deep … barely
    x = torch.stack([torch.zeros_like(z), torch.zeros_like(z), z], -1)
    still = ground_force(c, x, torch.zeros_like(x))[:, 2]  # the elastic force k·δ
    weight = c.mass / c.grid_size**2 * c.gravity
    for speed in (-1.0, -0.1, 0.0, 0.1, 0.5, 2.0, 20.0):  # downwards … fast upwards
        normal = ground_force(c, x, torch.tensor([0.0, 0.0, speed], dtype=F64).expand_as(x))[:, 2]
        assert (normal >= 0).all()
        if speed > 1 / c.contact_dissipation:  # leaving fast from shallow contact: no force, never a pull
            assert (normal[still <= 0.5 * weight] == 0).all()
    assert (ground_force(c, x, torch.tensor([0.0, 0.0, 20.0], dtype=F64).expand_as(x))[:, 2] == 0).all()
    rising = ground_force(c, x, torch.tensor([0.0, 0.0, 0.05], dtype=F64).expand_as(x))[:, 2]
    # the damping coefficient is d·W·tanh(k·δ/W): ≈ d·k·δ in shallow contact (it vanishes with δ), never above
    # d·W however deep (what the substep's stability bound counts)
    coefficient = (still - rising) / 0.05
    torch.testing.assert_close(coefficient, c.contact_dissipation * weight * torch.tanh(still / weight))
    shallow = still < 0.05 * weight
    assert shallow.sum() >= 2 and (still > 2 * weight).sum() >= 2
    torch.testing.assert_close(coefficient[shallow], c.contact_dissipation * still[shallow], rtol=2e-3, atol=0)
    assert (coefficient <= c.contact_dissipation * weight).all()


def test_the_kernel_applies_the_clamp_of_a_particle_leaving_the_ground_fast():
    """The 3×3 cloth's corner far from its gripper leaves the ground at 1 m/s from inside the contact layer:
    the kernel's substep equals the torch reference, in which the ground's force on it is exactly 0."""
    c = ClothFoldConfig(num_envs=1, grid_size=3, substeps=1, dt=0.001, grippers=[(0, 0)])
    env = make_cloth_fold(c, mb.BuildContext.cpu())
    s = env.reset(1, torch.Generator().manual_seed(0)).to(F64)
    s[:, 3 * 9:6 * 9] = 0.0
    s[:, 3 * 9 + 3 * 8 + 2] = 1.0  # particle 8 rises at 1 m/s from inside the contact layer
    s[:, 3 * 8 + 2] = c.particle_radius - 0.001
    x, v, grip = env.split(s)
    assert ground_force(c, x[0, 8:9], v[0, 8:9])[0, 2] == 0
    out = env.step(s, torch.zeros(1, 3, dtype=F64))
    xe, ve = reference_substep(c, x[0].clone(), v[0].clone(), grip[0], torch.zeros(1, 3, dtype=F64), env.held, c.dt)
    torch.testing.assert_close(env.split(out)[1][0], ve, rtol=1e-10, atol=1e-12)


def test_float32_follows_float64(env):
    s = settled(env)
    a = actions(env, 3, 1)[0]
    out64 = env.step(s, a)
    out32 = env.step(s.float(), a.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-5)


def test_the_cloth_rests_on_the_ground_and_follows_the_grippers(env):
    s = settled(env, steps=10)
    x, v, grip = env.split(s)
    assert v.abs().max() < 0.05  # settled: nearly at rest
    assert x[..., 2].min() > 0 and x[..., 2].max() < 2 * env.config.particle_radius
    up = torch.zeros(3, env.action_dim, dtype=F64)
    up[:, 2::3] = 1.0
    for _ in range(5):
        s = env.step(s, up)
    x, _, grip = env.split(s)
    torch.testing.assert_close(x[:, env.held], grip)
    assert torch.allclose(grip[..., 2], env.split(settled(env, steps=10))[2][..., 2] + 5 * env.config.dt
                          * env.config.max_speed)


def test_long_random_rollout_stays_finite_and_above_the_ground():
    env = make_env(num_envs=8)  # the default 8×8 cloth, float32
    g = torch.Generator().manual_seed(8)
    s = env.reset(8, g)
    for _ in range(300):
        s = env.step(s, 2 * torch.rand(8, env.action_dim, generator=g) - 1)
        assert torch.isfinite(s).all()
    x, _, grip = env.split(s)
    assert x[..., 2].min() > -0.02 and grip[..., 2].min() >= env.config.particle_radius


def test_bang_bang_grippers_never_make_a_cloth_diverge():
    """Full-speed gripper actions drag cloths deep into the ground and fling them up: the ground's damping
    must stay within the explicit substep's stability bound there (uncapped Hunt–Crossley damping, which grows
    with the penetration, sent one of these 256 cloths to inf within 15 steps)."""
    env = make_env(num_envs=256)
    g = torch.Generator().manual_seed(0)
    s = env.reset(256, g)
    for _ in range(40):
        s = env.step(s, (2 * torch.rand(256, env.action_dim, generator=g) - 1).sign())
    assert torch.isfinite(s).all()
    x, v, _ = env.split(s)
    assert x[..., 2].min() > -0.03 and v.abs().max() < 20


def test_keeps_the_diffenv_contract(env):
    check_env(env, fd_eps=1e-7)  # stiff contact: central differences need a small step


# ---------------------------------------------------------------- reward and observation
def test_fold_quality_is_zero_flat_and_one_folded(env):
    flat = env.reset(2, torch.Generator().manual_seed(9)).to(F64)
    flat_rest = torch.cat([env.rest.reshape(1, -1), torch.zeros(1, 3 * env.particles, dtype=F64),
                           env.rest[env.held].reshape(1, -1)], 1)
    assert abs(float(env.fold_quality(flat_rest))) < 1e-12
    assert env.fold_quality(flat).abs().max() < 0.05  # reset noise only
    folded = flat_rest.clone()
    x = env.split(folded)[0][0]
    n = env.side
    for row in range(n // 2):
        x[row * n:(row + 1) * n] = x[(n - 1 - row) * n:(n - row) * n]
    assert abs(float(env.fold_quality(folded)) - 1.0) < 1e-12
    a = torch.ones(1, env.action_dim, dtype=F64)
    assert float(env.reward(folded, a, folded)) == pytest.approx(1.0 - env.config.action_cost)


# ---------------------------------------------------------------- bad settings
@pytest.mark.parametrize("field, value", [
    ("grid_size", 2), ("stretch_stiffness", 0.0), ("shear_stiffness", -1.0), ("bend_stiffness", 0.0),
    ("ground_stiffness", 0.0), ("mass", 0.0), ("substeps", 0), ("grippers", [(0, 8)]),
    ("grippers", [(-9, 0)]), ("grippers", [(0, 0), (0, 8 - 8)]),
])
def test_bad_settings_fail_validation_naming_the_field(field, value):
    with pytest.raises(mb.RecipeError) as info:
        mb.validate_recipe({"env": {"kind": "cloth_fold", field: value}, "estimator": {"kind": "shac"}},
                           mb.default_registry(), "r.toml")
    assert info.value.problems[0].startswith(f"r.toml: env.{field}:"), info.value.problems


def test_the_old_contact_stiffness_key_is_read_as_ground_stiffness_with_one_warning(caplog):
    """The cloth's ground penalty (N/m) was ``contact_stiffness``, the name of the env's contact signal (kg)."""
    import logging

    with caplog.at_level(logging.WARNING, logger="mbmix_fw"):
        recipe = mb.validate_recipe({"env": {"kind": "cloth_fold", "contact_stiffness": 50.0},
                                     "estimator": {"kind": "shac"}}, mb.default_registry(), "r.toml")
    assert recipe.env.ground_stiffness == 50.0
    assert [r.getMessage() for r in caplog.records] == [
        "r.toml: env.contact_stiffness: deprecated, read as env.ground_stiffness; move it to [env]"]


def test_the_simulator_and_its_kernel_read_the_recipes_constants_under_the_recipes_names():
    from dataclasses import fields

    from mbmix_warp.bridge import kernel_params
    from mbmix_warp.physics import ClothPhysics

    config = ClothFoldConfig(grid_size=5, cloth_size=0.4, mass=0.5, dt=0.04, substeps=8, ground_stiffness=70.0)
    physics = ClothPhysics.from_config(config)
    derived = {"spacing": 0.1, "particle_mass": 0.02, "substep_dt": 0.005}
    for f in fields(ClothPhysics):
        expected = derived[f.name] if f.name in derived else getattr(config, f.name)
        assert getattr(physics, f.name) == pytest.approx(expected), f.name
    params = kernel_params(physics, torch.float64)
    for f in fields(ClothPhysics):
        if f.name != "substeps":
            assert getattr(params, f.name) == pytest.approx(getattr(physics, f.name)), f.name


def test_a_substep_too_long_for_the_stiffness_names_the_fields():
    with pytest.raises(mb.RecipeError) as info:
        mb.validate_recipe({"env": {"kind": "cloth_fold", "substeps": 4}, "estimator": {"kind": "shac"}},
                           mb.default_registry(), "r.toml")
    line, = info.value.problems
    assert line.startswith("r.toml: env.substeps: ") and "unstable" in line
    for name in ("stretch_stiffness", "ground_stiffness", "mass", "grid_size", "substeps >= "):
        assert name in line
    # the bound is a real one: at 4x the stable substep the cloth does blow up
    hot = ClothFoldConfig.model_construct(**{**ClothFoldConfig().model_dump(), "substeps": 2, "num_envs": 2})
    env = make_cloth_fold(hot, mb.BuildContext.cpu())
    s = env.reset(2)
    with torch.no_grad():
        for _ in range(40):
            s = env.step(s, torch.zeros(2, env.action_dim))
    assert not (torch.isfinite(s).all() and s.abs().max() < 10)


# ---------------------------------------------------------------- contact signal (AHAC)
def test_contact_stiffness_of_a_resting_and_of_a_hanging_cloth(env):
    c, P = env.config, env.particles
    weight = c.mass / P * c.gravity  # per particle
    still = torch.zeros(3, env.action_dim, dtype=F64)
    s = settled(env, steps=20)
    resting = env.contact_stiffness(s, still, env.step(s, still))
    # at rest every particle's weight is carried by the ground or a gripper, over the 1 m/s² floor
    torch.testing.assert_close(resting, torch.full((3,), math.sqrt(P) * weight, dtype=F64), rtol=0.1, atol=0)
    lifted = s.clone()
    lifted[:, 2:3 * P:3] += 0.3  # the whole cloth 30 cm up, still: only the grippers touch it
    lifted[:, 6 * P + 2::3] += 0.3
    hanging = env.contact_stiffness(lifted, still, env.step(lifted, still))
    torch.testing.assert_close(hanging, torch.full((3,), math.sqrt(env.num_grippers) * weight, dtype=F64),
                               rtol=1e-6, atol=0)
    assert mb.reports_contact(env)


def test_contact_stiffness_grows_when_the_cloth_is_pressed_into_the_ground(env):
    s = settled(env, steps=20)
    pressed = s.clone()
    pressed[:, 2:3 * env.particles:3] -= 0.5 * env.config.particle_radius
    still = torch.zeros(3, env.action_dim, dtype=F64)
    assert (env.contact_stiffness(pressed, still, env.step(pressed, still))
            > 1.2 * env.contact_stiffness(s, still, env.step(s, still))).all()

# ---------------------------------------------------------------- the bridge (mb.ExternalFunction, graphs)
def step_and_gradient(env, s0, a, u):
    s = s0.clone().requires_grad_(True)
    out = env.step(s, a)
    return out.detach(), torch.autograd.grad(out, s, u)[0]


def test_replayed_graphs_equal_one_by_one_launches():
    with_graphs, without = make_env(num_envs=2, grid_size=4, substeps=6), make_env(num_envs=2, grid_size=4, substeps=6)
    without.sim.use_graphs = False
    s0 = settled(with_graphs, n=2)
    a = actions(with_graphs, 2, 1)[0]
    u = torch.randn(s0.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    ours, theirs = step_and_gradient(with_graphs, s0, a, u), step_and_gradient(without, s0, a, u)
    assert all(ws.graphs for ws in with_graphs.sim._workspaces.values())
    assert not any(ws.graphs for ws in without.sim._workspaces.values())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_a_failing_graph_capture_warns_once_and_launches(monkeypatch):
    import mbmix_warp.bridge as bridge

    def refuse(*args, **kwargs):
        raise RuntimeError("capture refused for the test")

    monkeypatch.setattr(bridge.wp, "ScopedCapture", refuse)
    monkeypatch.setattr(bridge._Workspace, "capture_warned", False)
    env, reference = make_env(num_envs=2, grid_size=4, substeps=6), make_env(num_envs=2, grid_size=4, substeps=6)
    reference.sim.use_graphs = False
    s0 = settled(reference, n=2)
    a = torch.zeros(2, env.action_dim, dtype=F64)
    u = torch.ones_like(s0)
    with pytest.warns(RuntimeWarning, match="cloth step: graph capture failed .*capture refused") as caught:
        ours = step_and_gradient(env, s0, a, u)
        step_and_gradient(env, s0.float(), a.float(), u.float())  # another workspace: no second warning
    assert len(caught) == 1
    torch.testing.assert_close(ours, step_and_gradient(reference, s0, a, u), rtol=0, atol=0)


def test_second_derivatives_through_the_cloth_are_an_error(env):
    s0 = settled(env).requires_grad_(True)
    out = env.step(s0, torch.zeros(3, env.action_dim, dtype=F64))
    with pytest.raises(mb.BridgeError, match="cloth step: no second derivatives"):
        torch.autograd.grad(out.pow(2).sum(), s0, create_graph=True)


def test_probes_recompute_once_and_equal_one_backward_each(env, monkeypatch):
    s0, a = settled(env), actions(env, 3, 1)[0]
    u = mb.random_unit_vectors(3, 4, env.state_dim, torch.Generator().manual_seed(2), dtype=F64)
    runs = []
    ws_class = type(next(iter(env.sim._workspaces.values())))
    run = ws_class.run
    monkeypatch.setattr(ws_class, "run", lambda self, which: runs.append(which) or run(self, which))
    _, probe_s, probe_a = mb.vector_jacobian_products(env, s0, a, u)
    assert runs.count("forward") == 2 and runs.count("adjoint") == 4  # the step, one recompute, 4 adjoints
    for p in range(4):
        s, act = s0.clone().requires_grad_(True), a.clone().requires_grad_(True)
        g_s, g_a = torch.autograd.grad(env.step(s, act), (s, act), u[:, p])
        torch.testing.assert_close((probe_s[:, p], probe_a[:, p]), (g_s, g_a))
