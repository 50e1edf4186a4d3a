"""Brax (JAX) physics as differentiable torch envs: env kind ``brax``.

Every env of ``brax.envs`` becomes an :class:`mbmix_fw.DiffEnv` whose state is ``concat(q, qd)`` and whose
``step``, ``reward``, ``observe`` and ``terminated`` are Brax's own, differentiable through a
``torch.autograd.Function`` that calls jitted, vmapped JAX functions (forward) and their ``jax.vjp``
(backward), sharing memory with torch through DLPack. See :mod:`mbmix_brax.env` for the mechanism and
:mod:`mbmix_brax.bridge` for the bridge.

Backends: ``generalized``, ``positional``, ``spring`` (gradients checked against float64 finite
differences in the tests). ``mjx`` is not offered. MJX solves contact in a ``lax.while_loop``, which JAX
cannot differentiate in reverse mode; with one solver iteration (``opt.iterations = 1``) the loop is one
Newton step and ``jax.grad`` traces. On the smallest contact system (a sphere resting on, or hitting, a
plane; float64; ``benchmarks/mjx_contact_gradient.py``) that gradient is finite and matches central
differences. What a backend needs here was not shown: a window gradient through contact *through Brax's
mjx pipeline* on a contact env (an earlier report, mujoco 3.17, one iteration, gave NaN against a
finite difference of 0.033), and a test of it costs minutes of MJX compilation in a test suite already
over its time budget. The numbers: ``benchmarks/RESULTS.md``, the re-landed Brax speed-up's section.

Registration imports only the pydantic config; jax and brax load when a run builds the env. Without the
``[brax]`` extra the kind is still registered (brax recipes validate), ``mbmix-fw plugins`` lists it as
needing the extra, and only a run of a brax recipe stops, with the pip command (exit 2, one line).
"""
from __future__ import annotations

import mbmix_fw as mb

from .config import BRAX_BACKENDS, BRAX_ENV_NAMES, BraxConfig

__all__ = ["BRAX_BACKENDS", "BRAX_ENV_NAMES", "BraxConfig", "BraxEnv", "JaxFunction"]

__getattr__ = mb.lazy_attributes(__name__, {"BraxEnv": ".env", "JaxFunction": ".bridge"})


@mb.hookimpl
def register_envs(register):
    register(BraxConfig, mb.lazy_factory(f"{__name__}.env:BraxEnv", requires=("jax", "brax"), extra="brax"))
