"""mbmix-fw: first-order model-based RL (MB-MIX, SHAC, BPTT) as composable pluggy plugins.

Everything a plugin or research script needs is importable from here; other modules are private.
"""
from .component import ComponentConfig
from .context import BuildContext
from .env import DiffEnv, EnvConfig
from .errors import MbmixError, MissingDependency, PluginError, RecipeError, UserError, require
from .estimator import Estimate, EstimatorConfig, EstimatorInput, GradientEstimator
from .hookspecs import hookimpl
from .nets import Critic, ObsNormalizer, TanhGaussianPolicy, mlp
from .returns import bootstrap_values, lambda_returns
from .rollout import Cursor, Dynamics, Rollout, rollout
from .scheduler import Plan, Scheduler, SchedulerConfig
from .settings import CriticSettings, OptimSettings, PolicySettings, RunSettings
from .world_model import TransitionBatch, WorldModel, WorldModelConfig

__version__ = "0.1.0"

__all__ = [
    "BuildContext", "ComponentConfig", "Critic", "CriticSettings", "Cursor", "DiffEnv", "Dynamics",
    "EnvConfig", "Estimate", "EstimatorConfig", "EstimatorInput", "GradientEstimator", "MbmixError",
    "MissingDependency", "ObsNormalizer", "OptimSettings", "Plan", "PluginError", "PolicySettings",
    "RecipeError", "Rollout", "RunSettings", "Scheduler", "SchedulerConfig", "TanhGaussianPolicy",
    "TransitionBatch", "UserError", "WorldModel", "WorldModelConfig", "bootstrap_values", "hookimpl",
    "lambda_returns", "mlp", "require", "rollout",
]
