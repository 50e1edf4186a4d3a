"""What a factory receives besides its own config."""
from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import torch

if TYPE_CHECKING:
    from .env import DiffEnv


@attrs.frozen(eq=False)
class BuildContext:
    """Run-wide facts a component factory may need.

    Components are built in the order env → world_model → estimator → scheduler, so a world-model
    factory finds the environment (its ``state_dim`` / ``action_dim``) in ``env``.
    """

    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"), converter=torch.device)
    seed: int = 0
    dtype: torch.dtype = torch.float32
    env: "DiffEnv | None" = None

    @classmethod
    def cpu(cls, seed: int = 0, dtype: torch.dtype = torch.float32) -> "BuildContext":
        """A context for building a component by hand (tests, research code) on the CPU, in ``dtype``
        (``torch.float64`` for gradient checks by finite differences)."""
        return cls(device=torch.device("cpu"), seed=seed, dtype=dtype)

    def with_env(self, env: "DiffEnv") -> "BuildContext":
        return attrs.evolve(self, env=env)
