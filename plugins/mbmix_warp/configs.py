"""Config model of the ``cloth_fold`` env, importable without warp or torch (registration stays instant).

The ranges live here, so a recipe with an impossible cloth (grid too small, non-positive stiffness or
mass, no substeps, a gripper off the grid, or a substep too long for the stiffness) fails validation,
naming the field, before anything is built.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

import mbmix_fw as mb

STIFFNESS_FIELDS = ("stretch_stiffness", "shear_stiffness", "bend_stiffness", "ground_stiffness")


class ClothFoldConfig(mb.EnvConfig):
    """Fold a square cloth lying on the ground in half with grippers holding its corners.

    See :mod:`mbmix_warp.cloth` for the state, observation and reward, :mod:`mbmix_warp.kernels` for the
    physics. SI units throughout.
    """

    kind: Literal["cloth_fold"] = "cloth_fold"
    renamed_fields = {"contact_stiffness": "ground_stiffness"}
    num_envs: mb.NumEnvs = 16
    """Cloths simulated in parallel for training (all in the same kernel launches)."""
    episode_length: mb.Steps = 40
    """Steps per episode."""
    grid_size: int = Field(8, ge=3, le=512)
    """Particles per side: the cloth has grid_size² particles (8: CPU; 32 or more: GPU)."""
    cloth_size: float = Field(0.5, gt=0)
    """Side length of the square cloth at rest (m)."""
    mass: float = Field(0.5, gt=0)
    """Total cloth mass (kg), spread evenly over the particles."""
    stretch_stiffness: float = Field(25.0, gt=0)
    """Stiffness (N/m) of the springs between direct grid neighbours."""
    shear_stiffness: float = Field(6.0, gt=0)
    """Stiffness (N/m) of the diagonal springs."""
    bend_stiffness: float = Field(1.5, gt=0)
    """Stiffness (N/m) of the springs between particles two cells apart (resists bending)."""
    spring_damping: float = Field(0.01, ge=0)
    """Damping (N·s/m) of every spring along its direction."""
    gravity: float = Field(9.81, ge=0)
    """g (m/s²), along -z."""
    drag: float = Field(0.5, ge=0)
    """Air drag rate (1/s): force -drag·m·v on each particle."""
    particle_radius: float = Field(0.005, ge=0)
    """Height (m) above the ground at which contact starts."""
    ground_stiffness: float = Field(60.0, gt=0)
    """Ground penalty stiffness (N/m) per particle. (Was ``contact_stiffness``, still read with a warning:
    that name is the env's contact signal, :meth:`mbmix_warp.cloth.ClothFold.contact_stiffness`, in kg.)"""
    contact_width: float = Field(0.002, gt=0)
    """Smoothing width w (m) of the contact: penetration = w·softplus((radius - z)/w)."""
    contact_dissipation: float = Field(6.0, ge=0)
    """Hunt–Crossley dissipation d (s/m) of the ground: normal force
    ``max(0, k·δ - d·m·g·tanh(k·δ/(m·g))·v_z)``, damping that vanishes with the penetration δ, saturates at ``d·m·g`` (explicit-substep stability) and
    never pulls (:mod:`mbmix_warp.ground`). The default 6 s/m saturates at the 59/s rate of the Kelvin–Voigt
    damping (60/s) it replaced (0.76 of it at the resting penetration ``k·δ = m·g``), about a third of
    critical for the 8×8 cloth."""
    friction: float = Field(0.5, ge=0)
    """Coulomb friction coefficient μ with the ground."""
    friction_smoothing: float = Field(0.1, gt=0)
    """Slip speed ε (m/s) below which friction turns viscous (the differentiable regularisation)."""
    grippers: list[tuple[int, int]] = Field(default_factory=lambda: [(0, 0), (0, -1)], min_length=1, max_length=4)
    """Held particles (row, column), negative = from the far side; default: the corners of row 0.
    Row 0 is the outer edge of the half that folds over (rows < grid_size // 2)."""
    max_speed: float = Field(1.0, gt=0)
    """Gripper speed (m/s) per axis at action ±1."""
    action_cost: float = Field(0.01, ge=0)
    """Weight of the mean squared action subtracted from the reward."""
    reset_noise: float = Field(0.005, ge=0)
    """Reset: each particle moves by U(-reset_noise, reset_noise) (m) per axis (z: upwards only)."""
    reset_yaw: float = Field(0.2, ge=0, le=math.pi)
    """Reset: the whole cloth is rotated about z by U(-reset_yaw, reset_yaw) (rad)."""
    obs_stride: int = Field(2, ge=1)
    """The observation holds every obs_stride-th particle of each row and column."""
    dt: float = Field(0.05, gt=0)
    """Length of one env step (s)."""
    substeps: int = Field(8, ge=1, le=10_000)
    """Semi-implicit Euler substeps per env step; substep length dt / substeps (checked for stability)."""

    @field_validator("grippers")
    @classmethod
    def _grippers_on_the_grid(cls, grippers: list[tuple[int, int]], info: ValidationInfo):
        n = info.data.get("grid_size")
        if n is None:
            return grippers
        resolved = []
        for row, col in grippers:
            if not (-n <= row < n and -n <= col < n):
                raise ValueError(f"gripper ({row}, {col}) is off the {n}×{n} grid; rows and columns must be "
                                 f"in [{-n}, {n - 1}]")
            resolved.append((row % n, col % n))
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"two grippers hold the same particle: {grippers}")
        return grippers

    @field_validator("substeps")
    @classmethod
    def _substep_is_stable(cls, substeps: int, info: ValidationInfo) -> int:
        problem = stability_problem({**info.data, "substeps": substeps})
        if problem:
            raise ValueError(problem)
        return substeps


def stability_bounds(c: dict) -> tuple[float, float, float]:
    """``(h, h_stiff, h_damp)``: the substep ``h = dt/substeps`` and its two documented upper bounds.

    Semi-implicit Euler on a mass-spring system is stable for ``h < 2/ω_max``. Gershgorin bounds the
    largest eigenvalue of the per-particle stiffness by ``2K/m`` with ``K`` the summed stiffness of the
    12 springs and the ground at a particle, ``K = 4·(stretch + shear + bend) + contact``; with a safety
    factor of √2 this gives ``h ≤ sqrt(m / K)``. The damping terms (springs, ground, friction below its
    smoothing speed, drag) are explicit too: ``h·C/m ≤ 1`` with
    ``C = 24·spring_damping + contact_dissipation·m·g + μ·m·g/ε + drag·m`` (friction's viscous slope at rest;
    the ground's Hunt–Crossley damping ``d·m·g·tanh(k·δ/(m·g))`` at most).
    """
    m = c["mass"] / c["grid_size"] ** 2
    stiffness = 4 * (c["stretch_stiffness"] + c["shear_stiffness"] + c["bend_stiffness"]) + c["ground_stiffness"]
    damping = (24 * c["spring_damping"] + c["contact_dissipation"] * m * c["gravity"]
               + c["friction"] * m * c["gravity"]
               / c["friction_smoothing"] + c["drag"] * m)
    h_damp = m / damping if damping > 0 else math.inf
    return c["dt"] / c["substeps"], math.sqrt(m / stiffness), h_damp


def stability_problem(c: dict) -> str | None:
    """A message naming the fields when the substep breaks a bound of :func:`stability_bounds`, else None."""
    needed = ("mass", "grid_size", "dt", *STIFFNESS_FIELDS, "spring_damping", "contact_dissipation", "friction",
              "gravity", "friction_smoothing", "drag")
    if any(c.get(name) is None for name in needed):
        return None  # another field already failed validation
    h, h_stiff, h_damp = stability_bounds(c)
    limit = min(h_stiff, h_damp)
    if h <= limit:
        return None
    return (f"unstable: the substep dt/substeps = {h * 1e3:.3g} ms exceeds the stability bound "
            f"{limit * 1e3:.3g} ms = min(sqrt(m/K), m/C) with m = mass/grid_size², K = 4·(stretch_stiffness + "
            f"shear_stiffness + bend_stiffness) + ground_stiffness, C = 24·spring_damping + "
            f"contact_dissipation·m·gravity + friction·m·gravity/friction_smoothing + drag·m; set substeps >= {math.ceil(c['dt'] / limit)}, "
            f"or lower the stiffness or damping, or raise mass")
