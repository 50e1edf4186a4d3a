"""The ground's force on each cloth particle, in torch: the one reference of the contact law.

:mod:`mbmix_warp.kernels` integrates the same law in warp (it must: the kernel is what runs); everything else
that needs the ground's force in torch uses this function: the cloth's contact signal
(:meth:`mbmix_warp.cloth.ClothFold.contact_stiffness`), the tests that check the kernel against a torch
substep, and ``benchmarks/cloth_sim.py``'s torch reference simulator.

The law (units and defaults: :class:`mbmix_warp.configs.ClothFoldConfig`):

- penetration ``δ = w·softplus((r - z)/w)``: a smooth ``max(0, r - z)`` (``r`` the particle radius, ``w``
  the contact width), exact to within ``w·ln 2``;
- normal force **Hunt–Crossley** ``k·δ·max(0, 1 - d·v_z)`` (``k`` the contact stiffness, ``d`` the contact
  dissipation): the damping ``k·δ·d·v_z`` vanishes with the penetration, so a particle touching the ground
  barely is barely damped, and the clamp keeps the ground from ever pulling a particle down (the
  Kelvin–Voigt damping ``-c·σ·v_z`` it replaced, found in review of issue 17, made the normal force
  attractive for upward speeds above ``k·δ/c`` ≈ 0.16 m/s);
- regularised Coulomb friction ``-μ·k·δ·v_t / sqrt(|v_t|² + ε²)`` on the elastic part of the normal force:
  Coulomb for ``|v_t| ≫ ε``, viscous below (the smoothing that keeps it differentiable).
"""
from __future__ import annotations

import torch


def ground_force(config, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Force ``[..., 3]`` (N) of the ground on particles at positions ``x`` ``[..., 3]`` moving at ``v``
    ``[..., 3]``; ``config`` a :class:`~mbmix_warp.configs.ClothFoldConfig` (gravity and drag not included)."""
    u = (config.particle_radius - x[..., 2]) / config.contact_width
    elastic = config.contact_stiffness * config.contact_width * torch.nn.functional.softplus(u)
    pushing = elastic * (1.0 - config.contact_dissipation * v[..., 2]).clamp_min(0.0)
    slip = torch.sqrt(v[..., 0] ** 2 + v[..., 1] ** 2 + config.friction_smoothing**2)
    friction = -v[..., :2] * (config.friction * elastic / slip).unsqueeze(-1)
    return torch.cat([friction, pushing.unsqueeze(-1)], -1)
