"""The ``brax`` env config: pydantic only, so registering the plugin and validating recipes import no jax.

The env names are a static copy of ``brax.envs._envs`` (brax 0.14): validation cannot import brax (seconds,
and the extra may be missing). The factory checks the name against the installed brax again, so an env that a
newer brax drops is still a clear error, not a ``KeyError``.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

import mbmix_fw as mb

BRAX_ENV_NAMES = (
    "ant", "fast", "halfcheetah", "hopper", "humanoid", "humanoidstandup", "inverted_double_pendulum",
    "inverted_pendulum", "pusher", "reacher", "swimmer", "walker2d",
)
"""Every env registered in ``brax.envs`` (brax 0.14.2)."""

BRAX_BACKENDS = ("generalized", "positional", "spring")
"""Physics pipelines whose gradients are tested here. ``mjx`` is left out: see the plugin docstring."""

BraxEnvName = Literal[
    "ant", "fast", "halfcheetah", "hopper", "humanoid", "humanoidstandup", "inverted_double_pendulum",
    "inverted_pendulum", "pusher", "reacher", "swimmer", "walker2d",
]
BraxBackend = Literal["generalized", "positional", "spring"]

EnvKwarg = bool | int | float | str | list[float] | list[int]


class BraxConfig(mb.EnvConfig):
    kind: Literal["brax"] = "brax"
    name: BraxEnvName = "ant"
    """Brax env (``brax.envs``): ant, halfcheetah, hopper, humanoid, walker2d, inverted_pendulum, reacher, ..."""
    backend: BraxBackend = "generalized"
    """Physics pipeline: generalized (exact on the (q, qd) state), positional or spring (see the plugin docs)."""
    num_envs: mb.NumEnvs = 64
    """Environments simulated in parallel for training (one vmapped JAX call)."""
    episode_length: mb.Steps = 1000
    """Steps per episode; the time limit is applied by the rollout, not by a Brax wrapper."""
    float64: bool = False
    """Run the JAX physics in float64 (``jax_enable_x64`` scoped to this env's calls); tensors keep their dtype."""
    bridge_backward: Literal["recompute", "residuals"] = "recompute"
    """How the JAX bridge differentiates a step: recompute it fused with its VJP during backward (default:
    a window holds only each step's inputs; as fast as ``residuals`` for ant on a CPU), or keep JAX's
    residuals from the forward (one forward less, but 435 kB per ant env-step; can pay off for small
    states at large batches: ``benchmarks/brax_bridge.py`` times both)."""
    carry_pipeline: bool = True
    """Step from Brax's own pipeline state when a transition is given the previous transition's next state
    (skips rebuilding it from (q, qd) every step: forward kinematics, mass-matrix inverse, constraint
    Jacobians); any other state is rebuilt. The gradient then also flows through the carried state's derived
    quantities, as in Brax's own scan. False: always rebuild, with the step's pullback through (q, qd) only
    (the behaviour before; ``benchmarks/brax_bridge.py`` times both: on a CPU carrying paid off for ant, not
    for reacher, whose 4-dof pipeline state is cheap to rebuild)."""
    env_kwargs: dict[str, EnvKwarg] = Field(default_factory=dict)
    """Keyword arguments of the Brax env's constructor (e.g. ``ctrl_cost_weight``), checked at build time."""

    def brax_kwargs(self) -> dict[str, Any]:
        """``env_kwargs`` as Brax expects them (lists → tuples, e.g. ``healthy_z_range``)."""
        return {k: tuple(v) if isinstance(v, list) else v for k, v in self.env_kwargs.items()}
