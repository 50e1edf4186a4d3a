"""Built-in pure-torch envs for tests and studies: ``pendulum``, ``lqr``, ``tabular_mdp``, ``wall_push``.

- ``pendulum``: gym ``Pendulum-v1`` swing-up, learnable by SHAC on a CPU in minutes.
- ``lqr``: noisy linear-quadratic system with a closed-form expected return and exact policy gradient.
- ``tabular_mdp``: random finite MDP with a documented differentiable relaxation and exact gradient.
- ``wall_push``: a block pushed against a penalty-spring wall whose stiffness turns the simulator's
  gradients from informative to high-variance (the knob of Suh et al. 2022's failure mode).

Registration imports only the config models; the env classes (and torch) load when a run builds one.
"""
from __future__ import annotations

import mbmix_fw as mb

from .configs import LQRConfig, PendulumConfig, TabularMDPConfig, WallPushConfig

__all__ = ["LQR", "LQRConfig", "Pendulum", "PendulumConfig", "TabularMDP", "TabularMDPConfig", "WallPush",
           "WallPushConfig"]

__getattr__ = mb.lazy_attributes(__name__, {"Pendulum": ".pendulum", "LQR": ".lqr", "TabularMDP": ".tabular_mdp",
                                           "WallPush": ".wall"})


@mb.hookimpl
def register_envs(register):
    register(PendulumConfig, mb.lazy_factory(f"{__name__}.pendulum:Pendulum"))
    register(LQRConfig, mb.lazy_factory(f"{__name__}.lqr:LQR"))
    register(TabularMDPConfig, mb.lazy_factory(f"{__name__}.tabular_mdp:TabularMDP"))
    register(WallPushConfig, mb.lazy_factory(f"{__name__}.wall:WallPush"))
