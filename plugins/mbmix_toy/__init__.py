"""Built-in pure-torch envs for tests and studies: ``pendulum``, ``lqr``, ``tabular_mdp``.

- ``pendulum``: gym ``Pendulum-v1`` swing-up, learnable by SHAC on a CPU in minutes.
- ``lqr``: noisy linear-quadratic system with a closed-form expected return and exact policy gradient.
- ``tabular_mdp``: random finite MDP with a documented differentiable relaxation and exact gradient.
"""
from __future__ import annotations

import mbmix_fw as mb

from .lqr import LQR, LQRConfig
from .pendulum import Pendulum, PendulumConfig
from .tabular_mdp import TabularMDP, TabularMDPConfig

__all__ = ["LQR", "LQRConfig", "Pendulum", "PendulumConfig", "TabularMDP", "TabularMDPConfig"]


@mb.hookimpl
def register_envs(register):
    register(PendulumConfig, Pendulum)
    register(LQRConfig, LQR)
    register(TabularMDPConfig, TabularMDP)
