"""What a run is set up from before its first iteration: the global seeds, the floating-point type and the
actor-critic networks.

Why one module: building a recipe (``building/build.py``), the :class:`~mbmix_fw.training.trainer.Trainer`
built by research code without a recipe, and ``mbmix-fw diagnose`` (which rebuilds a run's policy from
its recipe or checkpoint) must agree on all three, bit for bit — the same seed must give the same initial
policy whichever of them builds it. It sits in the training layer, below building, because the trainer
needs it too and may not import building.
"""
from __future__ import annotations

import copy
import random

import attrs
import numpy as np
import torch

from ..contracts.env import DiffEnv
from ..contracts.settings import CriticSettings, PolicySettings
from ..errors import UserError
from ..maths.nets import Critic, ObsNormalizer, TanhGaussianPolicy


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch's global RNGs (the run's own generator is seeded separately)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_dtype(setting: str, env: DiffEnv, device: torch.device) -> torch.dtype:
    """The run's floating-point type: ``run.dtype``, or the env's (its ``reset`` states) for ``auto``."""
    produced = env.reset(1, torch.Generator(device=device).manual_seed(0)).dtype
    if setting == "auto":
        return produced
    wanted = getattr(torch, setting)
    if produced != wanted:
        raise UserError(f"run.dtype: {setting} requested but the env produces {produced} states; "
                        f"build the env in {setting} (its plugin must honour BuildContext.dtype)")
    return wanted


@attrs.frozen(eq=False)
class Networks:
    """The actor-critic networks of a run: the policy, the critic and its Polyak target, and the optional
    running observation normaliser that the policy and both critics see observations through."""

    policy: TanhGaussianPolicy
    critic: Critic
    target_critic: Critic
    obs_norm: ObsNormalizer | None

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observations as the networks see them (unchanged without a normaliser)."""
        return self.obs_norm.normalize(obs) if self.obs_norm is not None else obs


def build_networks(env: DiffEnv, policy: PolicySettings, critic: CriticSettings, device: torch.device,
                   dtype: torch.dtype) -> Networks:
    """The ``[policy]`` and ``[critic]`` networks for ``env``, initialised from torch's global generator
    in a fixed order (policy, then critic), so a run seeded with :func:`seed_everything` gets the same
    networks from the trainer and from ``diagnose``."""
    to = dict(device=device, dtype=dtype)
    actor = TanhGaussianPolicy(
        env.obs_dim, env.action_dim, policy.hidden, policy.activation, policy.layer_norm,
        policy.init_log_std, policy.squash,
    ).to(**to)
    value = Critic(env.obs_dim, critic.hidden, critic.activation, critic.layer_norm).to(**to)
    target = copy.deepcopy(value).requires_grad_(False)
    obs_norm = ObsNormalizer(env.obs_dim).to(device) if policy.normalize_obs else None
    return Networks(actor, value, target, obs_norm)


def adam(params, lr: float, betas) -> torch.optim.Adam:
    """Adam on the fused kernel, whose ``found_inf`` input skips a step on the device
    (:meth:`~mbmix_fw.training.guard.DivergenceGuard.step`)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
