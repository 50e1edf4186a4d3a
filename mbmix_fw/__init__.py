"""mbmix-fw: first-order model-based RL (MB-MIX, SHAC, BPTT) as composable pluggy plugins.

Everything a plugin or research script needs is importable from here; other modules are private.

Only the torch-free part (config bases, settings, errors, ``hookimpl``, recipes, registry) is imported
eagerly. Everything that needs torch loads on first attribute access, so listing plugins and
validating recipes never pay for importing torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .contracts.component import (MAX_ENVS, MAX_ITERATIONS, MAX_LAYERS, MAX_STEPS, MAX_WIDTH, ComponentConfig,
                                  EnvConfig, EstimatorConfig, Hidden, Iterations, NumEnvs, SchedulerConfig, Steps,
                                  StrictTable, WorldModelConfig)
from .errors import (MbmixError, MissingDependency, PluginError, RecipeError, TrainingDiverged, UserError,
                     require)
from .contracts.hookspecs import hookimpl
from .lazy import lazy_attributes, lazy_factory
from .building.recipe import Recipe, load_recipe, validate_recipe
from .building.registry import Registry, default_registry, load_registry, make_registry
from .contracts.settings import CriticSettings, OptimSettings, PolicySettings, RunSettings

__version__ = "0.1.0"

_LAZY = {
    ".training.buffer": ["ReplayBuffer"],
    ".building.build": ["Components", "build_components", "make_trainer", "resolve_device"],
    ".contracts.context": ["BuildContext"],
    ".contracts.env": ["DiffEnv", "Transition", "reports_contact"],
    ".contracts.particles": ["ParticleLayout", "checked_particle_layout"],
    ".contracts.estimator": ["Estimate", "EstimatorInput", "GradientEstimator"],
    ".maths.bridge": ["BridgeError", "ExternalFunction", "current_stream_handle", "from_foreign", "to_foreign"],
    ".maths.mix_returns": ["bootstrap_values", "mix_objective", "mix_weights", "mixed_returns", "segment_offsets", "shac_objective"],
    ".maths.nets": ["Critic", "ObsNormalizer", "RunningMoments", "TanhGaussianPolicy", "mlp"],
    ".maths.probes": ["FULL_JACOBIAN_MAX_DIM", "collect_eval_transitions", "collect_jacobians",
                "collect_transitions", "random_unit_vectors", "vector_jacobian_products"],
    ".maths.returns": ["lambda_returns", "safe_values"],
    ".contracts.rollout_types": ["Cursor", "Dynamics", "Rollout"],
    ".maths.rollouts": ["healthy_envs", "masked_actor_loss", "rollout"],
    ".maths.statistics": ["PairedDifference", "ScoreSummary", "bootstrap_interval", "iqm", "paired_difference",
                           "summarize_scores"],
    ".contracts.scheduler": ["NO_METRICS", "Plan", "Scheduler"],
    ".contracts.metrics": ["ACTOR_UPDATED", "EVAL_RETURN", "HELD_OUT_MODEL_ERRORS", "MODEL_JACOBIAN_ERROR_A",
                           "MODEL_JACOBIAN_ERROR_S"],
    ".maths.ranks": ["any_rank"],
    ".maths.finite": ["all_finite"],
    ".training.trainer": ["Trainer"],
    ".contracts.world_model": ["TransitionBatch", "WorldModel"],
}
_LAZY_MODULE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = sorted([
    "ComponentConfig", "CriticSettings", "EnvConfig", "EstimatorConfig", "MbmixError", "MissingDependency",
    "OptimSettings", "PluginError", "PolicySettings", "Recipe", "RecipeError", "Registry", "RunSettings",
    "SchedulerConfig", "TrainingDiverged", "UserError", "WorldModelConfig", "default_registry", "hookimpl",
    "lazy_attributes", "lazy_factory", "load_recipe", "MAX_ENVS", "MAX_ITERATIONS", "MAX_LAYERS", "MAX_STEPS",
    "MAX_WIDTH", "Hidden", "Iterations", "NumEnvs", "Steps", "StrictTable",
    "load_registry", "make_registry", "require", "validate_recipe", *_LAZY_MODULE,
])


def __getattr__(name: str):
    module = _LAZY_MODULE.get(name)
    if module is None:
        raise AttributeError(f"module 'mbmix_fw' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static checkers and IDEs see the lazy names as ordinary imports
    from .training.buffer import ReplayBuffer
    from .building.build import Components, build_components, make_trainer, resolve_device
    from .contracts.context import BuildContext
    from .contracts.env import DiffEnv, Transition, reports_contact
    from .contracts.particles import ParticleLayout, checked_particle_layout
    from .contracts.estimator import Estimate, EstimatorInput, GradientEstimator
    from .maths.bridge import BridgeError, ExternalFunction, current_stream_handle, from_foreign, to_foreign
    from .maths.mix_returns import (bootstrap_values, mix_objective, mix_weights, mixed_returns, segment_offsets,
                                    shac_objective)
    from .maths.nets import Critic, ObsNormalizer, RunningMoments, TanhGaussianPolicy, mlp
    from .maths.probes import (FULL_JACOBIAN_MAX_DIM, collect_eval_transitions, collect_jacobians,
                         collect_transitions, random_unit_vectors, vector_jacobian_products)
    from .maths.returns import lambda_returns, safe_values
    from .contracts.rollout_types import Cursor, Dynamics, Rollout
    from .maths.statistics import (PairedDifference, ScoreSummary, bootstrap_interval, iqm, paired_difference,
                                   summarize_scores)
    from .maths.rollouts import healthy_envs, masked_actor_loss, rollout
    from .contracts.scheduler import NO_METRICS, Plan, Scheduler
    from .contracts.metrics import (ACTOR_UPDATED, EVAL_RETURN, HELD_OUT_MODEL_ERRORS, MODEL_JACOBIAN_ERROR_A,
                                    MODEL_JACOBIAN_ERROR_S)
    from .maths.ranks import any_rank
    from .maths.finite import all_finite
    from .training.trainer import Trainer
    from .contracts.world_model import TransitionBatch, WorldModel
