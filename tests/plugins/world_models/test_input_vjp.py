"""The hand-differentiated forward + input VJP of the Sobolev MLP: finite differences, and the same loss and
parameter gradients as autograd's double backward."""
from __future__ import annotations

import pytest
import torch

import mbmix_fw as mb
from mbmix_fw.testing import LinearEnv
from mbmix_world_models import SobolevMLP
from mbmix_world_models.input_vjp import forward_with_input_vjp
from mbmix_world_models.loss import sobolev_loss

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturbed_net(layer_norm: bool, members: int = 2, hidden=(5, 4)):
    """A small float64 network whose LayerNorm scales and shifts are away from their (1, 0) start, so every
    parameter's gradient term is exercised."""
    model = SobolevMLP(3, 2, hidden=list(hidden), layer_norm=layer_norm, members=members, dtype=F64, seed=3)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))
    return model.net


@pytest.mark.parametrize("layer_norm", [True, False])
def test_the_pass_matches_the_network_and_its_vjp_and_finite_differences(layer_norm):
    net = perturbed_net(layer_norm)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, generator=g, dtype=F64)
    v = torch.randn(2, 6, 3, generator=g, dtype=F64)
    out, xi = forward_with_input_vjp(net, x, v)
    x_leaf = x.clone().requires_grad_(True)
    reference = net(x_leaf)
    (reference_xi,) = torch.autograd.grad(reference, x_leaf, v)
    torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(xi, reference_xi, rtol=1e-12, atol=1e-12)
    # The parameter gradients of both outputs, against central differences (float64).
    params = list(net.parameters())
    weights = (torch.randn(out.shape, generator=g, dtype=F64), torch.randn(xi.shape, generator=g, dtype=F64))

    def scalar(*ps):
        with torch.no_grad():
            for p, value in zip(params, ps):
                p.copy_(value)
        o, j = forward_with_input_vjp(net, x, v)
        return (o * weights[0]).sum() + (j * weights[1]).sum()

    def analytic():
        o, j = forward_with_input_vjp(net, x, v)
        return torch.autograd.grad((o * weights[0]).sum() + (j * weights[1]).sum(), params)

    grads = analytic()
    base = [p.detach().clone() for p in params]
    for index, p in enumerate(params):
        flat = p.detach().reshape(-1)
        for k in range(0, flat.numel(), max(1, flat.numel() // 7)):
            h = 1e-6
            up, down = [b.clone() for b in base], [b.clone() for b in base]
            up[index].view(-1)[k] += h
            down[index].view(-1)[k] -= h
            numeric = (scalar(*up) - scalar(*down)) / (2 * h)
            scalar(*base)
            assert float(grads[index].reshape(-1)[k].detach()) == pytest.approx(float(numeric.detach()), rel=1e-6,
                                                                               abs=1e-8)


def test_inputs_are_data_not_differentiated():
    net = perturbed_net(True, members=1)
    x = torch.randn(1, 4, 5, dtype=F64, requires_grad=True)
    out, xi = forward_with_input_vjp(net, x, torch.randn(1, 4, 3, dtype=F64))
    assert out.requires_grad and xi.requires_grad  # through the parameters
    (grad_x,) = torch.autograd.grad(out.sum() + xi.sum(), x, allow_unused=True)
    assert grad_x is None


@pytest.mark.parametrize("layer_norm, members, probes, fraction, smoothness", [
    (True, 1, 1, 1.0, 0.0), (False, 3, 1, 0.5, 0.3), (True, 2, 3, 1.0, 0.1),
])
def test_the_sobolev_loss_and_its_gradient_are_autograds(layer_norm, members, probes, fraction, smoothness):
    """The fused route (one cotangent per row: one probe, or probe mixing) against ``autograd.grad(
    create_graph=True)``: same loss, same parameter gradient, float64."""
    env = LinearEnv(3, 2, seed=1)
    env.A, env.B = env.A.double(), env.B.double()
    g = torch.Generator().manual_seed(2)
    state = torch.randn(32, 3, generator=g, dtype=F64) * torch.tensor([0.1, 3.0, 20.0], dtype=F64)
    batch = mb.collect_transitions(env, state, torch.rand(32, 2, generator=g, dtype=F64) * 2 - 1, probes, g)
    model = SobolevMLP(3, 2, hidden=[16, 12], layer_norm=layer_norm, members=members, probe_source="random",
                       probes=probes, jacobian_fraction=fraction, smoothness=smoothness, dtype=F64)
    for _ in range(3):
        model.fit(batch)  # statistics and parameters away from their start

    def loss_and_grads(fused: bool):
        state = model._mixing.get_state()
        terms = sobolev_loss(model.predict_members, batch, model.delta_stats.std(F64), 1.0, 0.7,
                             members=members, jacobian_rows=model.jacobian_rows(len(batch)),
                             probe_generator=model._mixing, smoothness=smoothness,
                             predict_vjp=model.predict_members_with_vjp if fused else None)
        model._mixing.set_state(state)
        return terms, torch.autograd.grad(terms.total, list(model.net.parameters()))

    (reference, reference_grads), (fused, fused_grads) = loss_and_grads(False), loss_and_grads(True)
    for a, b in [(reference.total, fused.total), (reference.jacobian_s, fused.jacobian_s),
                 (reference.jacobian_a, fused.jacobian_a), *zip(reference_grads, fused_grads)]:
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_fit_takes_the_fused_route():
    """``fit`` on a one-probe batch must not build autograd's double-backward graph (the cost this saves)."""
    env = LinearEnv(3, 2, seed=1)
    g = torch.Generator().manual_seed(2)
    batch = mb.collect_transitions(env, torch.randn(16, 3, generator=g), torch.rand(16, 2, generator=g), 1, g)
    model = SobolevMLP(3, 2, hidden=[8])
    calls = []
    original = torch.autograd.grad
    torch.autograd.grad = lambda *a, **k: calls.append(k.get("create_graph")) or original(*a, **k)
    try:
        model.fit(batch)
    finally:
        torch.autograd.grad = original
    assert calls == []


@pytest.mark.parametrize("layer_norm", [True, False])
def test_held_out_errors_through_the_pass_are_autograds(layer_norm):
    """``evaluate`` on one-probe batches (the adjoint source's held-out rows) uses the pass without its graph;
    the errors are those of :func:`mbmix_fw.vector_jacobian_products` (float64, an ensemble's mean)."""
    env = LinearEnv(3, 2, seed=1)
    env.A, env.B = env.A.double(), env.B.double()
    g = torch.Generator().manual_seed(2)
    state = torch.randn(40, 3, generator=g, dtype=F64) * torch.tensor([0.1, 3.0, 20.0], dtype=F64)
    batch = mb.collect_transitions(env, state, torch.rand(40, 2, generator=g, dtype=F64) * 2 - 1, 1, g)
    model = SobolevMLP(3, 2, hidden=[16, 12], layer_norm=layer_norm, members=3, dtype=F64)
    for _ in range(3):
        model.fit(batch)
    calls, route = [], model.predict_members_with_vjp
    model.predict_members_with_vjp = lambda *args: calls.append(1) or route(*args)  # counts the pass's uses
    fused = model.evaluate(batch)
    assert calls == [1]
    model.predict_members_with_vjp = None  # the autograd route
    reference = model.evaluate(batch)
    assert set(fused) == set(reference) and "model/jacobian_error_a" in fused
    for key, value in reference.items():
        assert fused[key] == pytest.approx(value, rel=1e-10), key
