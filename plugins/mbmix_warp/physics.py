"""The cloth's physical constants as the simulator uses them: one set of names from the recipe to the kernel.

Why its own module: the constants used to live three times under three sets of names (the recipe's
``stretch_stiffness`` became ``k_stretch`` here and stayed ``k_stretch`` in the kernel's struct; ``mass`` meant
the cloth's total in the recipe and one particle's in the kernel; ``dt`` the env step in the recipe and the
substep in the kernel). Now a constant keeps its recipe name wherever it means the same thing, the two that
are derived say what they are (``particle_mass``, ``substep_dt``), and the kernel's ``wp.struct`` is made from
these fields (:data:`mbmix_warp.kernels.PARAMS`), so the list exists once. Imports neither warp nor torch.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ClothPhysics:
    """The physical constants of one cloth simulator (SI units); see :mod:`mbmix_warp.kernels`. Fields named
    as in :class:`~mbmix_warp.configs.ClothFoldConfig` mean what they mean there."""

    grid_size: int
    spacing: float
    """Rest distance (m) between direct grid neighbours: ``cloth_size / (grid_size - 1)``."""
    stretch_stiffness: float
    shear_stiffness: float
    bend_stiffness: float
    spring_damping: float
    particle_mass: float
    """One particle's mass (kg): the recipe's total ``mass`` over ``grid_size²``."""
    gravity: float
    drag: float
    particle_radius: float
    contact_width: float
    ground_stiffness: float
    contact_dissipation: float
    friction: float
    friction_smoothing: float
    substep_dt: float
    """Substep length (s): the recipe's env step ``dt`` over ``substeps``."""
    substeps: int

    @classmethod
    def from_config(cls, config) -> "ClothPhysics":
        """The simulator's constants of a :class:`~mbmix_warp.configs.ClothFoldConfig`."""
        n = config.grid_size
        same = {f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)}
        return cls(**same, spacing=config.cloth_size / (n - 1), particle_mass=config.mass / n**2,
                   substep_dt=config.dt / config.substeps)


KERNEL_CONSTANTS = tuple(f.name for f in fields(ClothPhysics) if f.name not in ("grid_size", "substeps"))
"""The float constants the kernel reads from its struct, under these names (``grid_size`` is its int field;
``substeps`` is the bridge's loop count, not the kernel's)."""
