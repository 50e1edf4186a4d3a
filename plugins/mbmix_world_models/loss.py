"""The Sobolev loss, shared by every world model of this plugin: next states and Jacobian probes, balanced.

For a model ``ŝ' = f(s, a)`` (``M`` ensemble members; raw, un-normalised coordinates) and a batch of
transitions whose probes are the simulator's vector-Jacobian products ``t_s = uᵀ∂s'/∂s``,
``t_a = uᵀ∂s'/∂a`` (random unit ``u``, or the cotangents of the actor's own backward — see
:mod:`mbmix_fw.maths.adjoint_tap`)::

    L = mean ‖(f(s, a) − s') / σ‖²                                  (state term, per output dimension)
      + α_s · Σ ‖uᵀ∂f/∂s − t_s‖² / Σ ‖t_s − u‖²                      (relative state-Jacobian error)
      + α_a · Σ ‖uᵀ∂f/∂a − t_a‖² / Σ ‖t_a‖²                          (relative action-Jacobian error)

What balances what. Each Jacobian block is measured *relative to its targets' size* in the batch, so a
Jacobian term of 1 means "as wrong as predicting no dependence at all" whatever the units of the state
and however stiff the simulator. The state block is measured against ``J_s − I`` (``t_s − u``): the
identity part is what every residual model gets right for free, so including it would hide the error
of the part that must be learnt. The state term is in units of ``σ`` (the typical one-step change per
dimension), so 1 there means "as wrong as the typical step". ``α = 1`` therefore weighs "no Jacobian
information" like "off by one typical step". The network-coordinate loss this replaces put one probe's
Jacobian target at squared norm ~216 against ~1 for the state term on the 8×8 cloth (90 % of it the
stiff springs' ``∂s'/∂positions``; measured in ``benchmarks/RESULTS.md``), so α = 1 was ~200× off there and
the fit overfitted the spring block while its held-out state error rose; a relative term cannot be
dominated by one block's units.

Pooled, not per row: the numerator and denominator are sums over the batch (and probes), so stiff rows
weigh by their size inside a block, and a row whose target is ~0 cannot blow the term up.

Smoothness (PWM's idea, Georgiev et al. ICLR 2025: a model smoother than the true dynamics can give
better policy gradients than the dynamics' own Jacobians, which stiff contact makes large and erratic).
With ``smoothness = λ > 0`` the loss adds a penalty on the *model's* Jacobian along the same probes, in
the same relative units::

      + λ · ( Σ ‖uᵀ∂f/∂s − u‖² / Σ ‖t_s − u‖²  +  Σ ‖uᵀ∂f/∂a‖² / Σ ‖t_a‖² )

so on one probe the two Jacobian terms are minimised by ``α/(α+λ)`` times the simulator's VJP: ``α > 0,
λ = 0`` matches it, ``α = 0, λ = 0`` is plain MSE, ``λ > 0`` shrinks it (with ``α = 0``: as small as the
state term allows). The state block is penalised as ``J_s − I``, the part beyond "nothing moves", for the
reason the matching term is. The penalty reuses the matching term's model VJPs (no extra double
backward) and needs the probes only for their directions and their denominators. ``λ = 0`` computes
nothing new: the loss is bit-identical to the loss without the term.

Probe mixing (``probe_generator`` given and more than one stored probe): one random Gaussian
combination ``Σ_p c_p u_p`` with ``E[c_p c_q] = δ_pq / P`` replaces the ``P`` double-backward passes;
its squared error is an unbiased estimate of the per-probe mean. The denominator is always computed
exactly from the stored probes. With one probe there is nothing to mix (mixing would only multiply the
row's loss by ``c² ~ χ²₁`` noise), so a single probe is always used as it is.
"""
from __future__ import annotations

import math
from typing import Callable

import attrs
import torch

import mbmix_fw as mb

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``predict(state [M, B, S], action [M, B, A]) -> next_state [M, B, S]``, raw coordinates, member ``m``
evaluated on row ``m`` of its inputs (so per-member Jacobians come out of one backward)."""

PredictVJP = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""``predict_vjp(state, action, u [M, B, S]) -> (next_state, uᵀ∂f/∂s, uᵀ∂f/∂a)``: ``predict`` and its input VJP
in one pass, differentiable w.r.t. the parameters (a model's cheaper route than autograd's double backward)."""


@attrs.frozen(eq=False)
class SobolevTerms:
    """The loss and its parts (0-d tensors; ``jacobian_*`` are unweighted, ``None`` without probes)."""

    total: torch.Tensor
    state: torch.Tensor
    jacobian_s: torch.Tensor | None = None
    jacobian_a: torch.Tensor | None = None
    smooth: torch.Tensor | None = None
    """The unweighted smoothness penalty (the model's relative Jacobian size along the probes), ``None`` when
    ``smoothness = 0``."""


def sobolev_loss(predict: Predict, batch: mb.TransitionBatch, scale: torch.Tensor, alpha_s: float,
                 alpha_a: float, *, members: int = 1, jacobian_rows: int | None = None,
                 probe_generator: torch.Generator | None = None, smoothness: float = 0.0,
                 predict_vjp: PredictVJP | None = None) -> SobolevTerms:
    """The balanced Sobolev loss of ``predict`` on ``batch`` (module docstring), differentiable w.r.t. the
    model's parameters.

    ``scale [S]``: the unit of the state error (e.g. the running std of the one-step change). The first
    ``jacobian_rows`` rows (default: all) also get the Jacobian terms; they go through their own forward
    so the double backward runs on those rows only (buffer samples are i.i.d., so the first ``k`` are a
    uniform subset). ``smoothness`` weighs the penalty on the model's own Jacobian (module docstring).
    ``predict_vjp`` (optional) replaces the forward and ``autograd.grad(create_graph=True)`` of the Jacobian
    rows when each row has one cotangent (one probe, or mixing); the loss is the same.
    """
    state, action, target = batch.state, batch.action, batch.next_state
    expand = lambda x: x.unsqueeze(0).expand(members, *x.shape)  # noqa: E731 - [B, D] -> [M, B, D]
    use_jacobian = (alpha_s > 0 or alpha_a > 0 or smoothness > 0) and batch.probe_u is not None
    if not use_jacobian:
        state_loss = ((predict(expand(state), expand(action)) - target) / scale).pow(2).mean()
        return SobolevTerms(state_loss, state_loss)
    k = len(batch) if jacobian_rows is None else max(1, min(len(batch), jacobian_rows))
    u, t_s, t_a = batch.probe_u[:k].to(state.dtype), batch.probe_s[:k], batch.probe_a[:k]  # [k, P, ·]
    probes = u.shape[1]
    # Denominators from the stored probes, exact: mean over probes of the summed squared target sizes.
    den_s = (t_s - u).pow(2).sum() / probes
    den_a = t_a.pow(2).sum() / probes
    if probes > 1 and probe_generator is not None:
        c = torch.randn(members, k, probes, 1, generator=probe_generator).to(u) / math.sqrt(probes)
        u, t_s, t_a = ((c * v.unsqueeze(0)).sum(2, keepdim=True) for v in (u, t_s, t_a))  # [M, k, 1, ·]
    else:
        u, t_s, t_a = (v.unsqueeze(0).expand(members, *v.shape) for v in (u, t_s, t_a))  # [M, k, P, ·]
    if predict_vjp is not None and u.shape[2] == 1:  # one cotangent per row: the fused pass
        pred, model_s, model_a = predict_vjp(expand(state[:k]), expand(action[:k]), u[:, :, 0])
        model_s, model_a = model_s.unsqueeze(2), model_a.unsqueeze(2)
    else:
        s_leaf = expand(state[:k]).detach().requires_grad_(True)
        a_leaf = expand(action[:k]).detach().requires_grad_(True)
        pred = predict(s_leaf, a_leaf)
        rows_s, rows_a = [], []
        for p in range(u.shape[2]):
            g_s, g_a = torch.autograd.grad(pred, (s_leaf, a_leaf), u[:, :, p], create_graph=True)
            rows_s.append(g_s)
            rows_a.append(g_a)
        model_s, model_a = torch.stack(rows_s, 2), torch.stack(rows_a, 2)
    if k < len(batch):
        pred = torch.cat([pred, predict(expand(state[k:]), expand(action[k:]))], 1)
    state_loss = ((pred - target) / scale).pow(2).mean()
    num_s = (model_s - t_s).pow(2).sum() / (members * u.shape[2])
    num_a = (model_a - t_a).pow(2).sum() / (members * u.shape[2])
    tiny = torch.finfo(pred.dtype).tiny
    rel_s, rel_a = num_s / den_s.clamp_min(tiny), num_a / den_a.clamp_min(tiny)
    total = state_loss + alpha_s * rel_s + alpha_a * rel_a
    if smoothness == 0:
        return SobolevTerms(total, state_loss, rel_s, rel_a)
    size_s = (model_s - u).pow(2).sum() / (members * u.shape[2])
    size_a = model_a.pow(2).sum() / (members * u.shape[2])
    smooth = size_s / den_s.clamp_min(tiny) + size_a / den_a.clamp_min(tiny)
    return SobolevTerms(total + smoothness * smooth, state_loss, rel_s, rel_a, smooth)
