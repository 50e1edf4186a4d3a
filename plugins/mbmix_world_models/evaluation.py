"""Held-out errors of a world model, shared by the plugin's models so their numbers mean the same thing."""
from __future__ import annotations

import torch

import mbmix_fw as mb


def held_out_errors(model: mb.WorldModel, batch: mb.TransitionBatch, scale: torch.Tensor,
                    products: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
    """``model/state_error`` (mean of ``((ŝ' − s') / scale)²``) and, when ``batch`` carries probes, the pooled
    relative Jacobian errors ``model/jacobian_error`` and per block ``_s`` / ``_a`` (exact with the basis
    probes of :func:`mbmix_fw.collect_jacobians`). ``products``: the model's own ``(s', uᵀ∂s'/∂s, uᵀ∂s'/∂a)``
    on the batch's probes, when it has a cheaper route to them than :func:`mbmix_fw.vector_jacobian_products`."""
    with torch.no_grad():
        pred = model.step(batch.state, batch.action) if products is None else products[0]
        metrics = {"model/state_error": float(((pred - batch.next_state) / scale).pow(2).mean())}
    if batch.probe_u is None:
        return metrics
    if products is None:
        products = mb.vector_jacobian_products(model, batch.state, batch.action, batch.probe_u)
    _, model_s, model_a = products
    num_s, num_a = (model_s - batch.probe_s).pow(2).sum(), (model_a - batch.probe_a).pow(2).sum()
    den_s, den_a = batch.probe_s.pow(2).sum(), batch.probe_a.pow(2).sum()
    tiny = torch.finfo(num_s.dtype).tiny
    metrics["model/jacobian_error"] = float(((num_s + num_a) / (den_s + den_a).clamp_min(tiny)).sqrt())
    metrics["model/jacobian_error_s"] = float((num_s / den_s.clamp_min(tiny)).sqrt())
    metrics["model/jacobian_error_a"] = float((num_a / den_a.clamp_min(tiny)).sqrt())
    return metrics
