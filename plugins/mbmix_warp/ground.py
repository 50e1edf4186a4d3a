"""The ground's force on each cloth particle, in torch: the one reference of the contact law.

:mod:`mbmix_warp.kernels` integrates the same law in warp (it must: the kernel is what runs); everything else
that needs the ground's force in torch uses this function: the cloth's contact signal
(:meth:`mbmix_warp.cloth.ClothFold.contact_stiffness`), the tests that check the kernel against a torch
substep, and ``benchmarks/cloth_sim.py``'s torch reference simulator.

The law (units and defaults: :class:`mbmix_warp.configs.ClothFoldConfig`):

- penetration ``δ = w·softplus((r - z)/w)``: a smooth ``max(0, r - z)`` (``r`` the particle radius, ``w``
  the contact width), exact to within ``w·ln 2``;
- normal force ``max(0, k·δ - d·W·tanh(k·δ/W)·v_z)`` (``k`` the ground stiffness, ``d`` the contact
  dissipation, ``W = m·g`` a particle's weight, floored at 1e-6 N): **Hunt–Crossley** damping ``≈ d·k·δ·v_z``
  for shallow contact, so it vanishes with the penetration and a particle barely touching the ground is barely
  damped; the outer clamp keeps the ground from ever pulling a particle down. The Kelvin–Voigt damping
  ``-c·σ·v_z`` it replaced (found in a review of the physics) made the normal force attractive for upward speeds
  above ``k·δ/c`` ≈ 0.16 m/s. The coefficient saturates at ``d·W`` (``0.76·d·W`` at the resting penetration
  ``k·δ = W``): plain Hunt–Crossley's grows with δ without bound, and with the explicit substep that diverged
  (measured: bang-bang gripper actions sent 1 of 256 cloths to inf within 15 steps; saturated, none of
  1 024, as before the change). ``d·W`` is what the substep's stability bound counts
  (:func:`mbmix_warp.configs.stability_bounds`). ``tanh``, not ``min``: a cloth at rest sits exactly at
  ``k·δ = W``, and a kink there broke the step's derivative;
- regularised Coulomb friction ``-μ·k·δ·v_t / sqrt(|v_t|² + ε²)`` on the elastic part of the normal force:
  Coulomb for ``|v_t| ≫ ε``, viscous below (the smoothing that keeps it differentiable).
"""
from __future__ import annotations

import torch


def ground_force(config, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Force ``[..., 3]`` (N) of the ground on particles at positions ``x`` ``[..., 3]`` moving at ``v``
    ``[..., 3]``; ``config`` a :class:`~mbmix_warp.configs.ClothFoldConfig` (gravity and drag not included)."""
    u = (config.particle_radius - x[..., 2]) / config.contact_width
    elastic = config.ground_stiffness * config.contact_width * torch.nn.functional.softplus(u)
    weight = max(config.mass / config.grid_size**2 * config.gravity, 1e-6)
    damping = config.contact_dissipation * weight * torch.tanh(elastic / weight)
    pushing = (elastic - damping * v[..., 2]).clamp_min(0.0)
    slip = torch.sqrt(v[..., 0] ** 2 + v[..., 1] ** 2 + config.friction_smoothing**2)
    friction = -v[..., :2] * (config.friction * elastic / slip).unsqueeze(-1)
    return torch.cat([friction, pushing.unsqueeze(-1)], -1)
