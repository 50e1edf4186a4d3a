"""The ``particle_gnn`` world model on the warp cloth: exact parts passed through, Jacobians against finite
differences, a fit that learns, checkpoints, non-finite batches, and the CLI refusing an env without particles."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

import mbmix_fw as mb
from mbmix_fw.commands.cli import main

pytest.importorskip("warp")
from mbmix_world_models import ParticleGNN, ParticleGNNConfig, make_particle_gnn  # noqa: E402
from mbmix_warp import ClothFold, ClothFoldConfig  # noqa: E402
from mbmix_warp.ground import ground_force  # noqa: E402

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cloth(dtype=torch.float32, grid=5, substeps=8):
    return ClothFold(ClothFoldConfig(num_envs=4, grid_size=grid, grippers=[(0, 0), (0, -1), (2, 2)],
                                     substeps=substeps), mb.BuildContext(dtype=dtype))


def model_for(env, dtype=torch.float32, seed=0, **fields):
    fields = {"hidden": 16, "message_width": 8, "batch_size": 16, **fields}
    ctx = mb.BuildContext(dtype=dtype, seed=seed).with_env(env)
    return make_particle_gnn(ParticleGNNConfig(**fields), ctx)


def moving_states(env, n, generator, steps=3):
    """States a few random-action steps after a reset: particles moving, some lifted off the ground."""
    state = env.reset(n, generator)
    with torch.no_grad():
        for _ in range(steps):
            action = torch.rand(n, env.action_dim, generator=generator, dtype=state.dtype) * 2 - 1
            state = env.step(state, action)
    return state


def transitions(env, n, generator, probes=1):
    state = moving_states(env, n, generator)
    action = torch.rand(n, env.action_dim, generator=generator, dtype=state.dtype) * 1.8 - 0.9
    return mb.collect_transitions(env, state, action, probes, generator)


def test_driven_particles_and_grippers_are_the_simulators_values_and_jacobians():
    env = cloth(F64)
    model = model_for(env, F64)
    gen = torch.Generator().manual_seed(0)
    model.fit(transitions(env, 16, gen))  # statistics and weights away from their initial values
    state = moving_states(env, 6, gen)
    action = torch.rand(6, env.action_dim, generator=gen, dtype=F64) * 3 - 1.5  # some outside [-1, 1]
    layout = env.particle_layout()
    exact = torch.zeros(env.state_dim, dtype=torch.bool)
    positions = torch.zeros(layout.particles, 3, dtype=torch.bool)
    positions[layout.driven] = True
    exact[layout.positions], exact[layout.velocities], exact[layout.extra] = positions.reshape(-1), \
        positions.reshape(-1), True
    predicted, simulated = model.step(state, action), env.step(state, action)
    torch.testing.assert_close(predicted[:, exact], simulated[:, exact], rtol=0, atol=1e-12)
    assert (predicted[:, ~exact] - simulated[:, ~exact]).abs().max() > 1e-6  # the rest is learnt, not copied
    # the exact rows of both Jacobians are the simulator's
    u = torch.zeros(6, int(exact.sum()), env.state_dim, dtype=F64)
    u[:, torch.arange(u.shape[1]), exact.nonzero().reshape(-1)] = 1.0
    _, model_s, model_a = mb.vector_jacobian_products(model, state, action, u)
    _, sim_s, sim_a = mb.vector_jacobian_products(env, state, action, u)
    torch.testing.assert_close(model_s, sim_s, rtol=0, atol=1e-9)
    torch.testing.assert_close(model_a, sim_a, rtol=0, atol=1e-9)
    assert sim_a.abs().max() > 0.5  # the action does move them


class ClothForces(torch.nn.Module):
    """The cloth kernel's force law (mbmix_warp.kernels) in the integrator's slots: springs and their damping
    through ``pair_law``, ground, friction, gravity and drag through ψ, in raw units."""

    def __init__(self, c, kinds):
        super().__init__()
        self.c, self.m = c, c.mass / c.grid_size ** 2
        stiffness = torch.tensor([c.stretch_stiffness, c.shear_stiffness, c.bend_stiffness], dtype=F64)
        self.log_stiffness = torch.nn.Parameter((stiffness / self.m).log())

    def pair_law(self, kinds, rest, mean, std, unit):  # raw units: the test's statistics are the identity
        spring = self.log_stiffness.exp()[kinds].unsqueeze(-1) * rest
        return lambda strain, closing: spring * strain + self.c.spring_damping * closing / self.m

    def node(self, features):  # [1 + 3, N] (height, velocity) -> [3, N]
        c, m = self.c, self.m
        z, v = features[:1], features[1:]  # [1, N], [3, N]: particles last
        ground = ground_force(c, torch.cat([torch.zeros_like(v[:2]), z]).T, v.T).T
        gravity = torch.cat([torch.zeros_like(v[:2]), torch.full_like(z, -c.gravity * m)])
        return (ground + gravity - v * (c.drag * m)) / m


@pytest.mark.parametrize("model_substeps", [None, 16])
def test_the_integrator_with_the_cloths_own_forces_is_the_simulator_values_and_jacobians(model_substeps):
    """The integrator's structure (pairs, substeps, driven particles moving at their next velocity) can
    represent the cloth exactly: with the kernel's force law in its slots, step and Jacobians agree to
    rounding. So what the fit must learn is the force law, nothing else. With its own ``substeps`` it is
    the cloth integrated with that many substeps."""
    model = model_for(cloth(F64, grid=4), F64, substeps=model_substeps)
    env = cloth(F64, grid=4, substeps=model_substeps or 8)
    for stats in model.modules():
        if type(stats).__name__ == "RunningMoments":  # identity normalisation, raw units
            stats.mean.zero_()
            stats.var.fill_(1.0)
    model.velocity_change_stats.var.fill_(env.config.dt ** 2)  # acceleration unit 1
    model.net = ClothForces(env.config, 3)
    gen = torch.Generator().manual_seed(6)
    state = moving_states(env, 4, gen)
    action = torch.rand(4, env.action_dim, generator=gen, dtype=F64) * 1.8 - 0.9
    torch.testing.assert_close(model.step(state, action), env.step(state, action), rtol=0, atol=1e-12)
    errors = model.evaluate(mb.collect_jacobians(env, state, action))
    assert errors["model/jacobian_error_s"] < 1e-10 and errors["model/jacobian_error_a"] < 1e-10, errors


@pytest.mark.parametrize("message_width", [0, 8])
def test_the_pair_law_folds_normalisation_and_kinds_into_per_coupling_coefficients(message_width):
    """``pair_law`` (what the substeps evaluate) equals ``k_kind·L·strain + unit·φ(strain_n, closing_n)``
    written out from the parameters, for the linear law and the MLP law, float64."""
    env = cloth(F64)
    model = model_for(env, F64, message_width=message_width)
    gen = torch.Generator().manual_seed(8)
    model.fit(transitions(env, 16, gen))  # non-trivial statistics and weights
    forces, kinds = model.net, model.pair_kinds
    with torch.no_grad():
        for p in forces.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=F64) * 0.3)
    E = len(kinds)
    strain = torch.randn(E, 5, generator=gen, dtype=F64) * 0.05
    closing = torch.randn(E, 5, generator=gen, dtype=F64) * 0.2
    unit = (model.velocity_change_stats.std(F64) / env.config.dt).pow(2).mean().sqrt()
    strain_n = (strain - model.strain_stats.mean) / model.strain_stats.std(F64)
    closing_n = (closing - model.closing_speed_stats.mean) / model.closing_speed_stats.std(F64)
    rest = model.pair_rest.unsqueeze(-1)
    if message_width:
        features = torch.stack([strain_n, closing_n], -1)  # [E, B, 2]
        hidden = torch.nn.functional.silu(features @ forces.edge_w1 + forces.edge_b1 + forces.kind_bias[kinds][:, None])
        phi = (hidden @ forces.edge_w2 + forces.edge_b2)[..., 0]
    else:
        phi = (forces.edge_linear[kinds][:, None] * torch.stack([strain_n, closing_n], -1)).sum(-1) \
            + forces.edge_bias[kinds]
    expected = forces.log_stiffness.exp()[kinds].unsqueeze(-1) * rest * strain + unit * phi
    torch.testing.assert_close(model.pair_law(F64)(strain, closing), expected, rtol=1e-12, atol=1e-12)
    assert phi.abs().max() > 1e-3 * expected.abs().max()  # the learned part is not negligible here


@pytest.mark.parametrize("fields", [{}, {"message_width": 0}, {"substeps": 3}, {"architecture": "message_passing"}])
def test_jacobians_match_finite_differences_float64(fields):
    env = cloth(F64, grid=4)
    model = model_for(env, F64, **fields)
    gen = torch.Generator().manual_seed(1)
    model.fit(transitions(env, 16, gen))
    state = moving_states(env, 2, gen).requires_grad_(True)
    action = (torch.rand(2, env.action_dim, generator=gen, dtype=F64) * 1.6 - 0.8).requires_grad_(True)
    assert torch.autograd.gradcheck(model.step, (state, action), eps=1e-7, atol=1e-6, rtol=1e-5)


def test_a_short_fit_reduces_held_out_errors_on_cloth_transitions():
    env = cloth()
    gen = torch.Generator().manual_seed(2)
    train, held = transitions(env, 256, gen), transitions(env, 64, gen, probes=4)
    model = model_for(env, lr=3e-3)
    model.update_statistics(train)  # the initial model measured in the trained model's units
    before = model.evaluate(held)
    order = torch.Generator().manual_seed(3)
    for _ in range(120):
        index = torch.randint(len(train), (16,), generator=order)
        metrics = model.fit(mb.TransitionBatch(*(v[index] for v in (
            train.state, train.action, train.next_state, train.probe_u, train.probe_s, train.probe_a))))
        assert "model/skipped" not in metrics and "model/jacobian_loss" in metrics
    after = model.evaluate(held)
    assert after["model/state_error"] < 0.6 * before["model/state_error"], (before, after)
    assert after["model/jacobian_error"] < 0.9 * before["model/jacobian_error"], (before, after)


def test_state_dict_round_trip_restores_the_model_and_the_next_fit_step():
    env = cloth()
    gen = torch.Generator().manual_seed(4)
    batches = [transitions(env, 16, gen) for _ in range(3)]
    model = model_for(env, weight_decay=0.01)
    for batch in batches[:2]:
        model.fit(batch)
    file = io.BytesIO()
    torch.save(model.state_dict(), file)
    file.seek(0)
    restored = model_for(env, weight_decay=0.01, seed=123)  # different initial weights
    restored.load_state_dict(torch.load(file, weights_only=True))
    probe = batches[0]
    torch.testing.assert_close(restored.step(probe.state, probe.action), model.step(probe.state, probe.action),
                               rtol=0, atol=0)
    assert restored.fit_steps == model.fit_steps == 2
    assert model.fit(batches[2]) == restored.fit(batches[2])
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), name


def test_a_non_finite_batch_or_gradient_skips_the_step_and_changes_nothing():
    env = cloth()
    gen = torch.Generator().manual_seed(5)
    model = model_for(env)
    model.fit(transitions(env, 16, gen))
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    bad = transitions(env, 16, gen)
    bad.next_state[3, 7] = float("nan")
    assert model.fit(bad) == {"model/skipped": 1.0}
    huge = transitions(env, 16, gen)
    huge.probe_a.mul_(1e38)  # finite targets whose loss overflows float32
    assert model.fit(huge) == {"model/skipped": 1.0}
    for name, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, before[name]), name
    assert model.fit_steps == 1


def test_the_plain_mse_ablation_collects_no_probes():
    env = cloth()
    assert model_for(env, alpha_s=0.0, alpha_a=0.0).probes == 0
    assert model_for(env).probes == 1


RECIPE = """
[run]
iterations = 2
eval_every = 0
checkpoint_every = 1
eval_envs = 2
[env]
kind = "{env}"
num_envs = 2
episode_length = 4
[world_model]
kind = "particle_gnn"
hidden = 8
message_width = 4
batch_size = 4
buffer_capacity = 64
{model}
[estimator]
kind = "mix"
horizon = 2
lam = 0.5
[scheduler]
kind = "dyna"
model_branches = 2
model_fit_steps = 1
warmup_iterations = 1
[policy]
hidden = [8]
[critic]
hidden = [8]
iterations = 1
minibatches = 1
"""


@pytest.mark.parametrize("env, model, expected", [
    ("pendulum", "", "world_model 'particle_gnn' needs an env that declares its particles "
                     "(DiffEnv.particle_layout()); env 'pendulum' declares no particle layout"),
    ("cloth_fold", "probes = 0", "world_model.probes: alpha_s, alpha_a or smoothness > 0 needs probes >= 1"),
])
def test_cli_refuses_with_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, env, model, expected):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(RECIPE.format(env=env, model=model), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(recipe), "--no-progress", "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mbmix-fw: error: ") and expected in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"], "something was written"


def test_the_cloth_recipe_with_the_particle_model_validates():
    recipe = Path(__file__).parents[3] / "recipes" / "cloth_mbmix_particle.toml"
    assert main(["validate", str(recipe)]) == 0
    assert mb.load_recipe(recipe).world_model.kind == "particle_gnn"


def test_jacobian_fraction_puts_the_jacobian_terms_on_the_first_rows_only():
    env = cloth()
    gen = torch.Generator().manual_seed(7)
    batch = transitions(env, 16, gen)
    changed = mb.TransitionBatch(batch.state, batch.action, batch.next_state, batch.probe_u,
                                 batch.probe_s.clone(), batch.probe_a.clone())
    changed.probe_s[4:] *= 3.0
    changed.probe_a[4:] *= 3.0
    quarter = model_for(env, jacobian_fraction=0.25)
    quarter.update_statistics(batch)
    a, b = quarter.loss(batch), quarter.loss(changed)
    assert torch.equal(a.jacobian_s, b.jacobian_s) and torch.equal(a.jacobian_a, b.jacobian_a)
    assert torch.equal(a.state, b.state)
    whole = model_for(env)
    whole.update_statistics(batch)
    assert not torch.equal(whole.loss(batch).jacobian_a, whole.loss(changed).jacobian_a)
