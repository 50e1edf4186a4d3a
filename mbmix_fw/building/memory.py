"""A lower bound on the memory a recipe needs, checked before anything is allocated.

Field maxima (:mod:`mbmix_fw.contracts.component`) catch one absurd number; this catches absurd products of
sensible ones (4096 envs × a 10⁶-step BPTT episode, hidden = [65536] * 8) that would otherwise end in
an allocator's internal error, in swapping, or in the out-of-memory killer an hour into a run. The
estimate is deliberately a lower bound (what must be held at once, not what a run usually holds), so
the check only refuses recipes that cannot fit.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import torch

from ..errors import UserError

if TYPE_CHECKING:
    from ..contracts.env import DiffEnv
    from ..contracts.estimator import GradientEstimator
    from ..contracts.world_model import WorldModel
    from .recipe import Recipe

_ADAM_COPIES = 4
"""A trained parameter holds its value, gradient and Adam's two moments."""


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (CUDA: free device memory; CPU: ``MemAvailable``); None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def mlp_parameters(inputs: int, hidden: Sequence[int], outputs: int) -> int:
    """Weights and biases of an MLP ``inputs → hidden… → outputs``."""
    sizes = [inputs, *hidden, outputs]
    return sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))


def memory_needs(recipe: "Recipe", env: "DiffEnv", estimator: "GradientEstimator",
                 world_model: "WorldModel | None", longest_window: int | None = None) -> list[tuple[int, str]]:
    """``(bytes, what and which fields)`` for each large allocation a run of ``recipe`` must hold, given
    the components built from it (the components, not ``build.Components``: ``build`` imports this module).
    ``longest_window``: a scheduler's H_max when it plans longer windows than the estimator's horizon."""
    number = 4  # bytes of a float32; a float64 run needs more, so this stays a lower bound
    horizon = int(estimator.horizon(env))
    if longest_window is not None and longest_window > horizon:
        horizon, horizon_field = int(longest_window), "the scheduler's longest horizon"
    elif recipe.estimator.model_dump().get("horizon") is not None:
        horizon_field = "estimator.horizon"
    else:
        horizon_field = "env.episode_length"
    per_step = env.obs_dim + env.action_dim + sum(recipe.policy.hidden)
    needs = [(
        env.num_envs * horizon * per_step * number,
        f"one differentiable window of env.num_envs={env.num_envs} × {horizon_field}={horizon} steps",
    ), (
        number * (_ADAM_COPIES * mlp_parameters(env.obs_dim, recipe.policy.hidden, 2 * env.action_dim)
                  + (_ADAM_COPIES + 1) * mlp_parameters(env.obs_dim, recipe.critic.hidden, 1)),
        f"the networks of policy.hidden={list(recipe.policy.hidden)} and critic.hidden={list(recipe.critic.hidden)}",
    )]
    model = world_model
    if model is not None:
        capacity, probes = int(model.buffer_capacity), int(getattr(model, "probes", 0))
        row = 2 * env.state_dim + env.action_dim
        needs.append((capacity * row * (1 + probes) * number,
                      f"the replay buffer of world_model.buffer_capacity={capacity} transitions"))
    return needs


def check_memory(recipe: "Recipe", env: "DiffEnv", estimator: "GradientEstimator",
                 world_model: "WorldModel | None", device: torch.device,
                 longest_window: int | None = None) -> None:
    """Raise a one-line :class:`UserError` naming the fields when ``recipe`` cannot fit on ``device``."""
    available = available_bytes(device)
    if available is None:
        return
    needs = memory_needs(recipe, env, estimator, world_model, longest_window)
    total = sum(size for size, _ in needs)
    if total <= available:
        return
    size, what = max(needs)
    raise UserError(f"the recipe needs at least {_human(total)} on {device.type} but {_human(available)} is "
                    f"free; the largest part is {what} ({_human(size)}): lower those values")


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.3g} {unit}"
        size /= 1024
    raise AssertionError  # unreachable


__all__ = ["available_bytes", "check_memory", "memory_needs", "mlp_parameters"]
