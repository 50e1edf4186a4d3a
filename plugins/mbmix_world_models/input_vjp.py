"""The ensemble MLP's output and its input VJP in one pass, differentiable in the parameters by a hand-written
backward: the Sobolev update without autograd's second-order graph.

Why. The Jacobian term needs ``ξ = vᵀ∂g/∂x`` (``v``: the probe in network coordinates) and then the gradient
of a loss on ``(g(x), ξ)`` w.r.t. the parameters. ``autograd.grad(create_graph=True)`` builds that as a graph of
~120 full-size elementwise ops and ~400 small ones per update, and autograd's generic double backward of
``layer_norm`` and ``silu`` is most of them; on the pendulum benchmark (``benchmarks/sobolev_cost.py``) the
update cost about twice a plain-MSE one, of which the extra matmuls are a third. Writing the forward, the VJP
and the VJP's backward out keeps the same arithmetic with about half the elementwise ops and no graph
bookkeeping. A custom LayerNorm double backward alone (autograd doing the rest) saved nothing measurable.

The network (``EnsembleMLP``): ``z_i = x_i W_i + b_i``; hidden layers ``n_i = LN(z_i)``, ``y_i = n_i·s_i + t_i``
(without LayerNorm ``y_i = z_i``), ``x_{i+1} = silu(y_i)``; the output is the last ``z``. The VJP runs back
from ``γ_last = v``: ``ξ_{i+1} = γ_{i+1} W_{i+1}ᵀ``, ``η_i = ξ_{i+1}·silu'(y_i)``, ``ν_i = η_i·s_i``,
``γ_i = LN'(z_i)ᵀ ν_i``, and ``ξ_0 = γ_0 W_0ᵀ``. The backward differentiates both chains; the one new formula
is LayerNorm's second derivative. Per row of width ``D``, ``x̂ = (z − μ)·r``, ``r = (var + ε)^(-1/2)``, the
first backward maps ``g`` to ``r·(g − ⟨g⟩ − x̂⟨g x̂⟩)`` (``⟨·⟩``: row mean); it is linear in ``g`` by a symmetric
map (so a cotangent ``h`` of its output goes back to ``g`` by the same kernel), and through ``z`` it gives,
with ``a = ⟨g⟩, b = ⟨g x̂⟩, m = ⟨h⟩, c = ⟨h x̂⟩``::

    ∂⟨h, r·(g − a − x̂ b)⟩/∂z = −r²·( c·(g − a) + b·(h − m) + x̂·(⟨h g⟩ − a·m − 3·b·c) )

exact for any ``ε``. SiLU: ``silu' = σ·(1 + y(1 − σ))``,
``silu'' = σ(1 − σ)·(2 + y(1 − 2σ)) = σ(1 − σ)·(2 + y − 2·silu(y))``.

Only the parameters get gradients (the inputs ``x`` and ``v`` are data); only SiLU; second order only (the
result's backward is not itself differentiable). Checked against autograd and finite differences in
``tests/plugins/world_models/test_input_vjp.py``.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

EPS = 1e-5
"""``torch.nn.functional.layer_norm``'s default, which the autograd path uses."""


def _row_mean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vecdot(x, y).unsqueeze(-1) / x.shape[-1]


def _ln_backward(g: torch.Tensor, z: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.native_layer_norm_backward(g, z, z.shape[-1:], mean, rstd, None, None,
                                                     [True, False, False])[0]


def _ln_second(g: torch.Tensor, h: torch.Tensor, h_back: torch.Tensor, g_back: torch.Tensor, x_hat: torch.Tensor,
               rstd: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """``∂⟨h, LN'(z)ᵀg⟩/∂z`` (module docstring) as ``Σ tensor·coefficient`` (per-row coefficients), rewritten
    with the two LayerNorm backwards already at hand, ``g_back = r·(g − a − x̂ b)`` and ``h_back = r·(h − m −
    x̂ c)``: ``−r·(c·g_back + b·h_back) − r²·x̂·(⟨h g⟩ − a·m − b·c)``, three full-size passes where the caller
    accumulates it."""
    a, m = g.mean(-1, keepdim=True), h.mean(-1, keepdim=True)
    b, c, hg = _row_mean(g, x_hat), _row_mean(h, x_hat), _row_mean(h, g)
    return (g_back, -rstd * c), (h_back, -rstd * b), (x_hat, rstd.square().mul_(a * m + b * c - hg))


def _silu_backward(g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``g·silu'(y)`` in one fused kernel."""
    return torch.ops.aten.silu_backward(g, y)


class _ForwardInputVJP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v, layer_norm: bool, *params):
        layers = (len(params) + (2 if layer_norm else 0)) // (4 if layer_norm else 2)
        weights, biases = params[:layers], params[layers:2 * layers]
        scales, shifts = (params[2 * layers:3 * layers - 1], params[3 * layers - 1:]) if layer_norm else ((), ())
        inputs, saved = [x], []  # saved[i]: hidden layer i's (z, mean, rstd, x_hat, sigmoid, silu')
        h = x
        for i in range(layers - 1):
            z = torch.baddbmm(biases[i], h, weights[i])
            if layer_norm:
                x_hat, mean, rstd = torch.native_layer_norm(z, z.shape[-1:], None, None, EPS)
                y = torch.addcmul(shifts[i], x_hat, scales[i])
            else:
                y, x_hat, mean, rstd = z, None, None, None
            h = F.silu(y)
            saved.append((z, mean, rstd, x_hat, y))
            inputs.append(h)
        out = torch.baddbmm(biases[-1], h, weights[-1])
        gamma, gammas, xis = v, [None] * layers, [None] * layers
        etas, nus = [None] * (layers - 1), [None] * (layers - 1)
        gammas[-1] = v
        for i in range(layers - 1, 0, -1):
            xi = torch.bmm(gamma, weights[i].transpose(1, 2))
            xis[i] = xi
            z, mean, rstd, _, y = saved[i - 1]
            etas[i - 1] = eta = _silu_backward(xi, y)
            if layer_norm:
                nus[i - 1] = nu = eta * scales[i - 1]
                gamma = _ln_backward(nu, z, mean, rstd)
            else:
                gamma = eta
            gammas[i - 1] = gamma
        xi0 = torch.bmm(gamma, weights[0].transpose(1, 2))
        ctx.layers, ctx.layer_norm = layers, layer_norm
        ctx.save_for_backward(*params)
        ctx.inner = (inputs, saved, gammas, xis, etas, nus)
        return out, xi0

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_xi0):
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            raise RuntimeError("forward_with_input_vjp differentiates the parameters only (inputs are data)")
        layers, layer_norm = ctx.layers, ctx.layer_norm
        params = ctx.saved_tensors
        weights, scales = params[:layers], params[2 * layers:3 * layers - 1] if layer_norm else ()
        inputs, saved, gammas, xis, etas, nus = ctx.inner
        d_w, d_b = [None] * layers, [None] * layers
        d_s, d_t = [None] * (layers - 1), [None] * (layers - 1)
        # What the VJP chain adds to each hidden layer's d_y and d_z: ``d_y += p·q`` and ``d_z += Σ u·k``
        # (pairs of a full-size tensor and a per-row coefficient), applied in place in the forward chain.
        y_terms, z_terms, s_terms = [None] * (layers - 1), [None] * (layers - 1), [None] * (layers - 1)
        # The VJP chain, differentiated in its reverse (= the forward's) order.
        if d_xi0 is not None:
            d_w[0] = torch.bmm(d_xi0.transpose(1, 2), gammas[0])
            d_gamma = torch.bmm(d_xi0, weights[0])
            for i in range(layers - 1):
                z, mean, rstd, x_hat, y = saved[i]
                if layer_norm:
                    d_nu = _ln_backward(d_gamma, z, mean, rstd)
                    z_terms[i] = _ln_second(nus[i], d_gamma, d_nu, gammas[i], x_hat, rstd)
                    s_terms[i] = d_nu * etas[i]
                    d_eta = d_nu * scales[i]  # d_nu stays: z_terms holds it
                else:
                    d_eta = d_gamma
                d_xi = _silu_backward(d_eta, y)
                # silu''(y)·p = σ(1 − σ)·(2 + y − 2·silu(y))·p, σ(1 − σ)·p fused in sigmoid_backward
                y_terms[i] = (torch.ops.aten.sigmoid_backward(d_eta.mul_(xis[i + 1]), torch.sigmoid(y)),
                              torch.add(y, inputs[i + 1], alpha=-2).add_(2))
                d_w[i + 1] = torch.bmm(d_xi.transpose(1, 2), gammas[i + 1])
                if i + 1 < layers - 1:
                    d_gamma = torch.bmm(d_xi, weights[i + 1])
        # The forward chain.
        d_z = d_out if d_out is not None else torch.zeros_like(gammas[-1])
        for i in range(layers - 1, -1, -1):
            d_w[i] = torch.bmm(inputs[i].transpose(1, 2), d_z) if d_w[i] is None else \
                torch.baddbmm(d_w[i], inputs[i].transpose(1, 2), d_z)
            d_b[i] = d_z.sum(1, keepdim=True)
            if i == 0:
                break
            j = i - 1
            z, mean, rstd, x_hat, y = saved[j]
            d_y = _silu_backward(torch.bmm(d_z, weights[i].transpose(1, 2)), y)
            if y_terms[j] is not None:
                d_y.addcmul_(*y_terms[j])
            if layer_norm:
                d_t[j] = d_y.sum(1, keepdim=True)
                d_s[j] = (d_y * x_hat if s_terms[j] is None else s_terms[j].addcmul_(d_y, x_hat)).sum(1, keepdim=True)
                d_z = _ln_backward(d_y.mul_(scales[j]), z, mean, rstd)
                for tensor, coefficient in z_terms[j] or ():
                    d_z.addcmul_(tensor, coefficient)
            else:
                d_z = d_y
        grads = (*d_w, *d_b, *(d_s + d_t if layer_norm else []))
        return (None, None, None, *grads)


def forward_with_input_vjp(net, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(net(x), vᵀ∂net/∂x)`` for an ``EnsembleMLP`` with SiLU, differentiable w.r.t. its parameters only:
    ``x [M, N, in]``, ``v [M, N, out]`` -> ``[M, N, out]``, ``[M, N, in]``."""
    params = [*net.weights, *net.biases]
    if net.layer_norm:
        params += [*net.norm_scales, *net.norm_shifts]
    return _ForwardInputVJP.apply(x.detach(), v.detach(), net.layer_norm, *params)
