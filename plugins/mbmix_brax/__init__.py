"""Brax (JAX) physics as differentiable torch envs: env kind ``brax``.

Every env of ``brax.envs`` becomes an :class:`mbmix_fw.DiffEnv` whose state is ``concat(q, qd)`` and whose
``step``, ``reward``, ``observe`` and ``terminated`` are Brax's own, differentiable through a
``torch.autograd.Function`` that calls jitted, vmapped JAX functions (forward) and their ``jax.vjp``
(backward), sharing memory with torch through DLPack. See :mod:`mbmix_brax.env` for the mechanism and
:mod:`mbmix_brax.bridge` for the bridge.

Backends: ``generalized``, ``positional``, ``spring`` (gradients checked against float64 finite
differences in the tests). ``mjx`` is not offered: it was not verified here (every Brax compile costs
minutes on the 2-core CPU this plugin was built on), and its pipeline state is MuJoCo's ``mjx.Data``, whose
reverse-mode gradients run through an iterative constraint solver with line search; a backend is listed
only once its window gradients pass the float64 finite-difference test.

Registration imports only the pydantic config; jax and brax load when a run builds the env. Without the
``[brax]`` extra the kind is still registered (brax recipes validate), ``mbmix-fw plugins`` lists it as
needing the extra, and only a run of a brax recipe stops, with the pip command (exit 2, one line).
"""
from __future__ import annotations

import mbmix_fw as mb

from .configs import BRAX_BACKENDS, BRAX_ENV_NAMES, BraxConfig

__all__ = ["BRAX_BACKENDS", "BRAX_ENV_NAMES", "BraxConfig", "BraxEnv", "JaxFunction"]

__getattr__ = mb.lazy_attributes(__name__, {"BraxEnv": ".env", "JaxFunction": ".bridge"})


@mb.hookimpl
def register_envs(register):
    register(BraxConfig, mb.lazy_factory(f"{__name__}.env:BraxEnv", requires=("jax", "brax"), extra="brax"))
