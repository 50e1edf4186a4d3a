"""Sobolev world model: config, coordinates of the Jacobian loss, gradients, checkpoints, learning."""
from __future__ import annotations

import copy
import io

import pydantic
import pytest
import torch

import mbmix_fw as mb
from mbmix_fw.testing import LinearEnv
from mbmix_world_models import RunningMoments, SobolevConfig, SobolevMLP, make_sobolev, register_world_models

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: intra-op threads only add synchronisation (10x slower on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def linear_env64(state_dim=3, action_dim=2, seed=0):
    env = LinearEnv(state_dim, action_dim, seed=seed)
    env.A, env.B = env.A.double(), env.B.double()
    return env


def skewed_batch(env, n=64, probes=3, seed=0, dtype=F64):
    """Transitions with very different scales per state dimension, so normalisation matters."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.1, 3.0, 20.0][: env.state_dim] + [1.0] * max(0, env.state_dim - 3), dtype=dtype)
    state = (torch.randn(n, env.state_dim, generator=g, dtype=dtype) + 0.5) * scale
    action = torch.rand(n, env.action_dim, generator=g, dtype=dtype) * 2 - 1
    return mb.collect_transitions(env, state, action, probes, g)


def small_model(state_dim=3, action_dim=2, **kw):
    kw = {"hidden": [16, 16], "seed": 0, "dtype": F64, "probe_source": "random", **kw}
    return SobolevMLP(state_dim, action_dim, **kw)


def full_jacobians(fn, state, action):
    """Per-sample ``[B, S, S]``, ``[B, S, A]`` Jacobians of ``fn(state, action)`` by torch.func.jacrev."""
    def single(s, a):
        return fn(s.unsqueeze(0), a.unsqueeze(0)).squeeze(0)
    j_s, j_a = torch.vmap(torch.func.jacrev(single, argnums=(0, 1)))(state, action)
    return j_s.detach(), j_a.detach()


# --- configuration -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    {"members": 0}, {"alpha_s": -1.0}, {"probes": -1}, {"hidden": []}, {"hidden": [0]}, {"lr": 0.0},
    {"batch_size": 0}, {"buffer_capacity": 0}, {"clip_probe_norm": 0.0}, {"activation": "relu"},
    {"probes": 0}, {"jacobian_fraction": 0.0}, {"jacobian_fraction": 1.5}, {"typo": 1},
])
def test_bad_config_values_fail_validation(bad):
    with pytest.raises(pydantic.ValidationError):
        SobolevConfig(**bad)


def test_factory_builds_from_the_env_and_registers_under_its_kind():
    registered = []
    register_world_models(lambda cls, factory: registered.append((cls, factory)))
    from mbmix_world_models import ParticleGNNConfig, make_particle_gnn
    assert registered == [(SobolevConfig, make_sobolev), (ParticleGNNConfig, make_particle_gnn)]
    env = LinearEnv(4, 3)
    config = SobolevConfig(hidden=[8], buffer_capacity=123, batch_size=17, probes=2, probe_source="random")
    model = make_sobolev(config, mb.BuildContext.cpu(seed=5).with_env(env))
    assert isinstance(model, mb.WorldModel) and config.kind == "sobolev_mlp"
    assert (model.state_dim, model.action_dim, model.probes) == (4, 3, 2)
    assert (model.buffer_capacity, model.batch_size) == (123, 17)
    assert model.step(torch.zeros(5, 4), torch.zeros(5, 3)).shape == (5, 4)


def test_alpha_zero_is_the_mse_model_and_collects_no_probes():
    config = SobolevConfig(alpha_s=0.0, alpha_a=0.0, hidden=[8])
    env = linear_env64()
    model = make_sobolev(config, mb.BuildContext(dtype=F64).with_env(env))
    assert model.probes == 0  # config.probes = 4 is ignored: nothing to match
    batch = mb.collect_transitions(env, torch.randn(32, 3, dtype=F64), torch.rand(32, 2, dtype=F64),
                                   model.probes, torch.Generator())
    assert batch.probe_u is None
    metrics = model.fit(batch)
    assert set(metrics) == {"model/loss", "model/state_loss"}
    assert metrics["model/loss"] == metrics["model/state_loss"]


# --- normalisation and the Jacobian loss -------------------------------------------------------

def test_running_moments_match_the_moments_of_all_data():
    moments = RunningMoments(3)
    chunks = [torch.randn(n, 3) * 4 + 2 for n in (5, 17, 1, 40)]
    for chunk in chunks:
        moments.update(chunk)
    data = torch.cat(chunks).double()
    torch.testing.assert_close(moments.mean, data.mean(0))
    torch.testing.assert_close(moments.var, data.var(0, unbiased=False))


def test_jacobian_loss_vanishes_when_the_targets_are_the_models_own_jacobians():
    """The raw → normalised transformation of probes is exact: targets taken from the model itself
    (in raw coordinates, through its public ``step``) give a zero Jacobian loss. (One member: an
    ensemble's ``step`` is the members' mean, whose Jacobian no single member has.)"""
    env = linear_env64()
    model = small_model(members=1, probe_mixing=False)
    model.update_statistics(skewed_batch(env, seed=1))  # non-trivial μ, σ in every coordinate
    own = skewed_batch(model, seed=2)
    _, _, jacobian_loss = model.loss(own)
    assert float(jacobian_loss.detach()) < 1e-20


def test_jacobian_loss_equals_the_documented_relative_frobenius_errors():
    """With basis probes, L_s = Σ_b ‖J_m,s − J_s‖²_F / Σ_b ‖J_s − I‖²_F and L_a = Σ_b ‖J_m,a − J_a‖²_F /
    Σ_b ‖J_a‖²_F (mbmix_world_models/loss.py), and the state term is the squared error in units of σ_Δ."""
    env = linear_env64()
    model = small_model(probe_mixing=False)
    model.update_statistics(skewed_batch(env, seed=1))
    state = skewed_batch(env, seed=3).state
    action = torch.rand(state.shape[0], 2, dtype=F64) * 2 - 1
    batch = mb.collect_jacobians(env, state, action)
    model_s, model_a = full_jacobians(model.step, state, action)
    n = state.shape[0]
    expected_s = (model_s - env.A).pow(2).sum() / ((env.A - torch.eye(3, dtype=F64)).pow(2).sum() * n)
    expected_a = (model_a - env.B).pow(2).sum() / (env.B.pow(2).sum() * n)
    expected_state = ((model.step(state, action) - batch.next_state) / model.delta_stats.std(F64)).pow(2).mean()
    model_alpha_s = small_model(probe_mixing=False, alpha_a=0.0)
    model_alpha_s.load_state_dict(model.state_dict())
    total, state_loss, jacobian_loss = model.loss(batch)
    torch.testing.assert_close(state_loss, expected_state)
    torch.testing.assert_close(jacobian_loss, expected_s + expected_a)
    torch.testing.assert_close(total, state_loss + expected_s + expected_a)
    torch.testing.assert_close(model_alpha_s.loss(batch)[0], state_loss + expected_s)


def test_one_probe_is_never_mixed():
    """Mixing a single probe would multiply its loss by c² ~ χ²₁ noise: one probe is used as it is."""
    env = linear_env64()
    batch = skewed_batch(env, probes=1, seed=4)
    mixed, plain = small_model(probe_mixing=True), small_model(probe_mixing=False)
    mixed.update_statistics(batch), plain.update_statistics(batch)
    losses = {float(mixed.loss(batch)[0].detach()) for _ in range(3)}
    assert losses == {float(plain.loss(batch)[0].detach())}


def test_probe_mixing_is_unbiased_for_the_per_probe_loss():
    env = linear_env64()
    model = small_model(probe_mixing=False)
    model.update_statistics(skewed_batch(env, seed=1))
    batch = skewed_batch(env, n=256, probes=4, seed=4)  # every row draws its own mixing: 256 draws per call
    exact = float(model.loss(batch)[2].detach())
    model.probe_mixing = True
    draws = torch.tensor([float(model.loss(batch)[2].detach()) for _ in range(200)], dtype=F64)
    stderr = float(draws.std()) / len(draws) ** 0.5
    assert abs(float(draws.mean()) - exact) < 5 * stderr
    assert float(draws.std()) > 0  # the mixing really draws something


def test_jacobian_fraction_uses_a_subset_for_the_jacobian_term_only():
    env = linear_env64()
    full, part = small_model(probe_mixing=False), small_model(probe_mixing=False, jacobian_fraction=0.25)
    for m in (full, part):
        m.update_statistics(skewed_batch(env, seed=1))
    batch = skewed_batch(env, n=64, seed=5)
    head = mb.TransitionBatch(*(v[:16] for v in (batch.state, batch.action, batch.next_state,
                                                 batch.probe_u, batch.probe_s, batch.probe_a)))
    _, state_full, jac_full_head = full.loss(head)
    total, state_part, jac_part = part.loss(batch)
    torch.testing.assert_close(state_part, full.loss(batch)[1])  # the state term still sees every row
    torch.testing.assert_close(jac_part, jac_full_head)


def test_ensemble_members_are_fitted_independently():
    """Each member's Jacobian term uses its own VJP (not the sum over members)."""
    env = linear_env64()
    ensemble = small_model(members=2, probe_mixing=False)
    ensemble.update_statistics(skewed_batch(env, seed=1))
    batch = skewed_batch(env, seed=6)
    singles = []
    for m in range(2):
        single = small_model(members=1, probe_mixing=False)
        single.load_state_dict({k: (v[m:m + 1] if k.startswith("net.") else v)
                                for k, v in ensemble.state_dict().items() if k != "_extra_state"}, strict=False)
        singles.append(single)
    expected = [torch.stack(v).mean() for v in zip(*(s.loss(batch) for s in singles))]
    for got, want in zip(ensemble.loss(batch), expected):
        torch.testing.assert_close(got, want)
    mean_step = torch.stack([s.step(batch.state, batch.action) for s in singles]).mean(0)
    torch.testing.assert_close(ensemble.step(batch.state, batch.action), mean_step)


def test_clip_probe_norm_scales_long_rows_only():
    env = linear_env64()
    batch = skewed_batch(env, probes=5)
    norms = torch.cat([batch.probe_s, batch.probe_a], -1).norm(dim=-1)
    limit = float(norms.median())
    model = small_model(clip_probe_norm=limit)
    probe_s, probe_a = model._clipped_targets(batch)
    clipped = torch.cat([probe_s, probe_a], -1)
    assert float(clipped.norm(dim=-1).max()) <= limit * (1 + 1e-12)
    short = norms <= limit
    torch.testing.assert_close(clipped[short], torch.cat([batch.probe_s, batch.probe_a], -1)[short])
    long_rows = ~short  # clipped rows keep their direction
    torch.testing.assert_close(clipped[long_rows] / clipped[long_rows].norm(dim=-1, keepdim=True),
                               torch.cat([batch.probe_s, batch.probe_a], -1)[long_rows] / norms[long_rows, None])


# --- gradients ---------------------------------------------------------------------------------

def test_step_gradients_match_finite_differences():
    env = linear_env64()
    model = small_model(members=2)
    model.update_statistics(skewed_batch(env, seed=1))
    state = skewed_batch(env, n=4, seed=7).state.requires_grad_(True)
    action = (torch.rand(4, 2, dtype=F64) * 2 - 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s, a: model.step(s, a), (state, action))


def test_sobolev_loss_parameter_gradients_match_finite_differences():
    """The double-backward path (create_graph) gives the true gradient of the loss w.r.t. weights."""
    env = linear_env64()
    model = small_model(members=2, probe_mixing=False, jacobian_fraction=0.5)
    model.update_statistics(skewed_batch(env, seed=1))
    batch = skewed_batch(env, n=16, seed=8)
    model.zero_grad()
    model.loss(batch)[0].backward()
    g = torch.Generator().manual_seed(0)
    for param in model.net.parameters():
        flat, grad = param.data.view(-1), param.grad.view(-1)
        for i in torch.randint(flat.numel(), (3,), generator=g).tolist():
            original, eps = float(flat[i]), 1e-6
            flat[i] = original + eps
            up = float(model.loss(batch)[0].detach())
            flat[i] = original - eps
            down = float(model.loss(batch)[0].detach())
            flat[i] = original
            assert abs((up - down) / (2 * eps) - float(grad[i])) < 1e-6 * (1 + abs(float(grad[i])))


# --- smoothness (a model smoother than the simulator) ------------------------------------------

def probe_sizes(model, batch):
    """The model's relative Jacobian size along the batch's probes (every probe, no mixing), recomputed from
    full Jacobians: ``Σ‖uᵀ(J_s − I)‖² / Σ‖t_s − u‖² + Σ‖uᵀJ_a‖² / Σ‖t_a‖²``."""
    j_s, j_a = full_jacobians(model.step, batch.state, batch.action)
    u = batch.probe_u
    eye = torch.eye(j_s.shape[-1], dtype=j_s.dtype)
    vjp_s = torch.einsum("bps,bst->bpt", u, j_s - eye)
    vjp_a = torch.einsum("bps,bsa->bpa", u, j_a)
    return (vjp_s.pow(2).sum() / (batch.probe_s - u).pow(2).sum()
            + vjp_a.pow(2).sum() / batch.probe_a.pow(2).sum())


def test_smoothness_penalty_is_the_models_relative_jacobian_size_and_zero_adds_nothing():
    """The penalty equals its formula recomputed from full Jacobians; ``smoothness = λ`` adds exactly λ times
    it to the loss; ``smoothness = 0`` reports no penalty and a total that is exactly the matching loss."""
    env = linear_env64()
    batch = skewed_batch(env, n=16, seed=3)
    base, smooth = small_model(probe_mixing=False), small_model(probe_mixing=False, smoothness=0.7)
    for m in (base, smooth):
        m.update_statistics(skewed_batch(env, seed=1))
    zero, terms = base.loss_terms(batch), smooth.loss_terms(batch)
    assert zero.smooth is None
    assert torch.equal(zero.total, zero.state + zero.jacobian_s + zero.jacobian_a)
    torch.testing.assert_close(terms.smooth, probe_sizes(smooth, batch), rtol=1e-10, atol=0)
    assert torch.equal(terms.total, zero.total + 0.7 * terms.smooth)


def fitted(env, steps=200, **kw):
    model = small_model(lr=1e-2, **kw)
    for step in range(steps):
        model.fit(skewed_batch(env, seed=100 + step))
    return model


@pytest.mark.parametrize("alpha", [1.0, 0.0], ids=["sobolev", "mse"])
def test_smoothness_makes_the_fitted_models_jacobian_smaller_on_the_same_data(alpha):
    """Same data, same initial weights: with ``smoothness > 0`` the fitted model's Jacobian along held-out
    probes is smaller than without it, for the Sobolev model (α = 1) and for plain MSE (α = 0)."""
    env = linear_env64()
    held_out = skewed_batch(env, n=128, seed=7)
    plain = fitted(env, alpha_s=alpha, alpha_a=alpha, probes=3)
    smooth = fitted(env, alpha_s=alpha, alpha_a=alpha, probes=3, smoothness=2.0)
    assert smooth.probes == 3 and plain.probes == (3 if alpha else 0)  # smoothness alone still collects probes
    size_plain, size_smooth = probe_sizes(plain, held_out).item(), probe_sizes(smooth, held_out).item()
    assert size_smooth < 0.8 * size_plain, (size_plain, size_smooth)
    assert "model/smooth_loss" in smooth.fit(held_out) and "model/smooth_loss" not in plain.fit(held_out)


def test_smoothness_without_probes_fails_validation():
    with pytest.raises(pydantic.ValidationError, match="smoothness"):
        SobolevConfig(alpha_s=0.0, alpha_a=0.0, smoothness=1.0, probes=0)
    assert SobolevConfig(alpha_s=0.0, alpha_a=0.0, smoothness=1.0).smoothness == 1.0


# --- checkpoints -------------------------------------------------------------------------------

def test_state_dict_round_trip_restores_the_model_and_the_next_fit_step():
    env = linear_env64()
    model = small_model(members=2, weight_decay=0.01)  # probe mixing on: its generator is saved too
    batches = [skewed_batch(env, seed=s) for s in range(4)]
    for batch in batches[:3]:
        model.fit(batch)
    file = io.BytesIO()
    torch.save(model.state_dict(), file)
    file.seek(0)
    restored = small_model(members=2, weight_decay=0.01, seed=123)  # different initial weights
    restored.load_state_dict(torch.load(file, weights_only=True))
    torch.testing.assert_close(restored.step(batches[0].state, batches[0].action),
                               model.step(batches[0].state, batches[0].action), rtol=0, atol=0)
    assert restored.fit_steps == model.fit_steps == 3
    assert model.fit(batches[3]) == restored.fit(batches[3])
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), name


def test_loaded_optimizer_state_is_not_shared_with_the_source():
    env = linear_env64()
    model = small_model()
    model.fit(skewed_batch(env, seed=0))
    clone = small_model()
    clone.load_state_dict(model.state_dict())
    snapshot = copy.deepcopy(clone.optimizer.state_dict())
    model.fit(skewed_batch(env, seed=1))
    for key, state in clone.optimizer.state_dict()["state"].items():
        assert torch.equal(state["exp_avg"], snapshot["state"][key]["exp_avg"])


# --- evaluation and learning -------------------------------------------------------------------

def test_evaluate_reports_exact_full_jacobian_error():
    env = linear_env64()
    model = small_model()
    model.update_statistics(skewed_batch(env, seed=1))
    state, action = skewed_batch(env, seed=9).state, torch.rand(64, 2, dtype=F64) * 2 - 1
    metrics = model.evaluate(mb.collect_jacobians(env, state, action))
    model_s, model_a = full_jacobians(model.step, state, action)
    err_s, err_a = (model_s - env.A).pow(2).sum(), (model_a - env.B).pow(2).sum()
    norm_s, norm_a = env.A.pow(2).sum() * 64, env.B.pow(2).sum() * 64
    assert metrics["model/jacobian_error"] == pytest.approx(float(((err_s + err_a) / (norm_s + norm_a)).sqrt()))
    assert metrics["model/jacobian_error_s"] == pytest.approx(float((err_s / norm_s).sqrt()))
    assert metrics["model/jacobian_error_a"] == pytest.approx(float((err_a / norm_a).sqrt()))
    pred = model.step(state, action).detach()
    expected_state = ((pred - env.step(state, action)) / model.delta_stats.std(F64)).pow(2).mean()
    assert metrics["model/state_error"] == pytest.approx(float(expected_state))
    # the model evaluated against itself is exact
    own = model.evaluate(mb.collect_jacobians(model, state, action))
    assert own["model/jacobian_error"] < 1e-12 and own["model/state_error"] < 1e-20
    assert set(model.evaluate(mb.collect_transitions(env, state, action, 0))) == {"model/state_error"}


def test_sobolev_model_recovers_the_jacobian_of_a_linear_env():
    env = LinearEnv(3, 2, seed=1)
    g = torch.Generator().manual_seed(0)
    model = SobolevMLP(3, 2, hidden=[32, 32], probes=2, lr=3e-3, batch_size=64, seed=0)

    def fresh(n):
        return torch.randn(n, 3, generator=g) * 2, torch.rand(n, 2, generator=g) * 2 - 1

    start = model.evaluate(mb.collect_jacobians(env, *fresh(512)))
    for _ in range(400):
        model.fit(mb.collect_transitions(env, *fresh(64), model.probes, g))
    end = model.evaluate(mb.collect_jacobians(env, *fresh(512)))
    assert start["model/jacobian_error"] > 0.3
    assert end["model/jacobian_error"] < 0.03, end  # measured 0.019
    assert end["model/state_error"] < 3e-3, end  # measured 0.001
