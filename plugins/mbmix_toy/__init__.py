"""Built-in pure-torch envs for tests and studies: ``pendulum``, ``lqr``, ``tabular_mdp``.

- ``pendulum``: gym ``Pendulum-v1`` swing-up, learnable by SHAC on a CPU in minutes.
- ``lqr``: noisy linear-quadratic system with a closed-form expected return and exact policy gradient.
- ``tabular_mdp``: random finite MDP with a documented differentiable relaxation and exact gradient.

Registration imports only the config models; the env classes (and torch) load when a run builds one.
"""
from __future__ import annotations

import importlib

import mbmix_fw as mb

from .configs import LQRConfig, PendulumConfig, TabularMDPConfig

_CLASSES = {"Pendulum": "pendulum", "LQR": "lqr", "TabularMDP": "tabular_mdp"}

__all__ = ["LQR", "LQRConfig", "Pendulum", "PendulumConfig", "TabularMDP", "TabularMDPConfig"]


def __getattr__(name: str):
    if name in _CLASSES:
        return getattr(importlib.import_module(f".{_CLASSES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _factory(class_name: str):
    def make(config, ctx):
        return __getattr__(class_name)(config, ctx)

    make.__name__ = f"make_{_CLASSES[class_name]}"
    return make


@mb.hookimpl
def register_envs(register):
    register(PendulumConfig, _factory("Pendulum"))
    register(LQRConfig, _factory("LQR"))
    register(TabularMDPConfig, _factory("TabularMDP"))
