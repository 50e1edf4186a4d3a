"""Built-in world model ``sobolev_mlp``: an MLP (ensemble) trained on next states and simulator Jacobians.

Recipe::

    [world_model]
    kind = "sobolev_mlp"
    hidden = [256, 256]
    alpha_s = 1.0        # 0 and alpha_a = 0: the plain-MSE ablation (no probes are collected)
    probes = 4
    smoothness = 0.0     # > 0: also penalise the model's own Jacobian along the probes (smoother than the sim)

The loss, the coordinates it works in and the probe estimator are documented in
:mod:`mbmix_world_models.model`. The package also registers ``particle_gnn``
(config in :mod:`mbmix_world_models.configs`), a message-passing model for envs that declare their particles. Registration imports only the config; the model (and torch) loads when a
run builds one or on first access to ``SobolevMLP``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import mbmix_fw as mb

from .configs import ParticleGNNConfig, SobolevConfig

if TYPE_CHECKING:
    from .model import EnsembleMLP, RunningMoments, SobolevMLP
    from .particle_model import ParticleGNN

__getattr__ = mb.lazy_attributes(__name__, {**dict.fromkeys(("EnsembleMLP", "RunningMoments", "SobolevMLP"), ".model"),
                                            "ParticleGNN": ".particle_model"})


def make_sobolev(config: SobolevConfig, ctx: "mb.BuildContext") -> "SobolevMLP":
    """Factory: a :class:`SobolevMLP` sized for ``ctx.env`` on ``ctx.device``, seeded by ``ctx.seed``."""
    from .model import SobolevMLP

    return SobolevMLP.from_config(config, ctx)


def make_particle_gnn(config: ParticleGNNConfig, ctx: "mb.BuildContext"):
    """Factory: a :class:`~mbmix_world_models.particle_model.ParticleGNN` for ``ctx.env``'s particle layout."""
    from .particle_model import ParticleGNN

    return ParticleGNN.from_config(config, ctx)


@mb.hookimpl
def register_world_models(register):
    register(SobolevConfig, make_sobolev)
    register(ParticleGNNConfig, make_particle_gnn)


__all__ = ["EnsembleMLP", "ParticleGNN", "ParticleGNNConfig", "RunningMoments", "SobolevConfig", "SobolevMLP",
           "make_particle_gnn", "make_sobolev"]
