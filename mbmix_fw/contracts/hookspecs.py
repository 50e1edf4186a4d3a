"""Extension points. A plugin is any module with ``@mbmix_fw.hookimpl`` functions named like the hooks below.

Every ``register_*`` hook is called once per plugin when the registry loads (``mbmix-fw plugins``,
``validate``, ``run``), before any component is built. It receives ``register(ConfigClass, factory)``:

- ``ConfigClass`` subclasses the slot's config base (:class:`mbmix_fw.EnvConfig`, …) and declares
  ``kind: Literal["name"] = "name"``; a recipe selects it with ``kind = "name"`` in its table.
- ``factory(config, ctx)`` builds the component from a validated config and a
  :class:`mbmix_fw.BuildContext`. It is called only when a run builds that component, so heavy packages
  (jax, brax, warp) are imported inside it, never at module level.

Event hooks (``on_*``) are broadcast to every plugin; loggers implement them.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("mbmix_fw")
hookimpl = pluggy.HookimplMarker("mbmix_fw")


@hookspec
def register_envs(register):
    """Register differentiable environments: ``register(EnvConfigSubclass, factory) -> None``;
    ``factory(config, ctx) -> DiffEnv``. Recipe table: ``[env]``.

    Example::

        @mbmix_fw.hookimpl
        def register_envs(register):
            register(PendulumConfig, Pendulum)
    """


@hookspec
def register_world_models(register):
    """Register learned dynamics models: ``factory(config, ctx) -> WorldModel``; ``ctx.env`` is built.
    Recipe table: ``[world_model]`` (optional)."""


@hookspec
def register_estimators(register):
    """Register policy-gradient estimators: ``factory(config, ctx) -> GradientEstimator``.
    Recipe table: ``[estimator]``."""


@hookspec
def register_schedulers(register):
    """Register schedulers: ``factory(config, ctx) -> Scheduler``. Recipe table: ``[scheduler]``."""


@hookspec
def on_iteration_end(run_dir, iteration, metrics):
    """Called by the trainer after each iteration with the iteration's scalar ``metrics`` (a dict);
    ``run_dir`` is the run folder or ``None`` for runs without outputs."""


@hookspec
def on_run_end(run_dir, metrics):
    """Called once when a run finishes normally, with the final metrics (including ``eval/return``)."""
