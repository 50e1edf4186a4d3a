"""The linear-Gaussian policy form the study envs (LQR, tabular MDP) can differentiate in closed form."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

import mbmix_fw as mb

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``objective(W [A, O], b [A], log_std [A]) -> scalar`` expected return, differentiable (float64)."""


def linear_gaussian_parts(policy, obs_dim: int, action_dim: int, env_name: str) -> tuple[nn.Linear, torch.Tensor]:
    """The ``(Linear, log_std)`` of ``a = W·o + b + σ·ε``, or :class:`mbmix_fw.UserError` if ``policy``
    is not a :class:`mbmix_fw.TanhGaussianPolicy` with ``hidden=[]`` and ``squash=False`` of the env's sizes.
    """
    how = (f"{env_name}: the exact policy gradient needs a linear-Gaussian policy "
           "(TanhGaussianPolicy with hidden=[], squash=False; recipe: [policy] hidden = [], squash = false, "
           "normalize_obs = false)")
    if not isinstance(policy, mb.TanhGaussianPolicy):
        raise mb.UserError(f"{how}; got {type(policy).__name__}")
    if policy.squash:
        raise mb.UserError(f"{how}; got squash=True")
    layers = list(policy.mean)
    if len(layers) != 1 or not isinstance(layers[0], nn.Linear) or layers[0].bias is None:
        raise mb.UserError(f"{how}; got a mean network with layers {[type(m).__name__ for m in layers]}")
    linear = layers[0]
    if (linear.in_features, linear.out_features) != (obs_dim, action_dim):
        raise mb.UserError(
            f"{how}; got a {linear.in_features}→{linear.out_features} layer, the env needs {obs_dim}→{action_dim}"
        )
    known = {id(linear.weight), id(linear.bias), id(policy.log_std)}
    if {id(p) for p in policy.parameters()} != known:
        raise mb.UserError(f"{how}; the policy has parameters besides weight, bias and log_std")
    return linear, policy.log_std


def exact_gradient(policy, obs_dim: int, action_dim: int, env_name: str, objective: Objective) -> list[torch.Tensor]:
    """``∇ objective`` w.r.t. ``list(policy.parameters())``, by autograd in float64 on detached copies.

    Returns float64 tensors shaped like (and in the order of) ``policy.parameters()``.
    """
    linear, log_std = linear_gaussian_parts(policy, obs_dim, action_dim, env_name)
    originals = (linear.weight, linear.bias, log_std)
    copies = tuple(p.detach().to(torch.float64).requires_grad_(True) for p in originals)
    value = objective(*copies)
    grads = torch.autograd.grad(value, copies, allow_unused=True)
    by_id = {
        id(p): torch.zeros_like(c) if g is None else g.contiguous()
        for p, c, g in zip(originals, copies, grads)
    }
    return [by_id[id(p)] for p in policy.parameters()]


def policy_value(policy, obs_dim: int, action_dim: int, env_name: str, objective: Objective) -> torch.Tensor:
    """``objective`` at the policy's parameters (cast to float64, still connected to them)."""
    linear, log_std = linear_gaussian_parts(policy, obs_dim, action_dim, env_name)
    return objective(linear.weight.double(), linear.bias.double(), log_std.double())
