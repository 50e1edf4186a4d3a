"""Newton (NVIDIA's warp-based successor of warp.sim) robots as differentiable torch envs.

Env kinds: ``newton_cartpole`` (swing-up, the cheap CPU learning check), ``newton_ant`` (Newton's
``nv_ant.xml``), ``newton_hopper`` (Brax's ``hopper.xml``) and ``newton_humanoid`` (Newton's ``nv_humanoid.xml``),
the last three with DiffRL's observation, reward and termination and AHAC's contact signal
(``contact_stiffness``: the ``ahac`` scheduler runs on them). Each is an :class:`mbmix_fw.DiffEnv` whose
step crosses into Newton once through :class:`mbmix_fw.ExternalFunction` (:mod:`mbmix_newton.bridge`:
Featherstone substeps, all envs of a batch in one Newton model, torch views of warp memory, recompute on a
``wp.Tape`` in backward).

Registration imports only the pydantic configs: newton and warp load when a run builds an env, so ``mbmix-fw
plugins`` stays instant. Without the ``[newton]`` extra the kinds still register (their recipes validate),
``mbmix-fw plugins`` lists them as needing the extra, and only a run that builds one stops, with the pip
command (``pip install 'mbmix-fw[newton]'``, exit 2, one line).
"""
from __future__ import annotations

import mbmix_fw as mb

from .configs import NewtonAntConfig, NewtonCartPoleConfig, NewtonHopperConfig, NewtonHumanoidConfig

__all__ = ["NewtonAnt", "NewtonAntConfig", "NewtonCartPole", "NewtonCartPoleConfig", "NewtonHopper",
           "NewtonHopperConfig", "NewtonHumanoid", "NewtonHumanoidConfig", "NewtonSimulator"]

__getattr__ = mb.lazy_attributes(__name__, {"NewtonCartPole": ".cartpole", "NewtonAnt": ".ant",
                                            "NewtonHopper": ".hopper", "NewtonHumanoid": ".humanoid",
                                            "NewtonSimulator": ".bridge"})

_REQUIRES = ("newton", "warp")


@mb.hookimpl
def register_envs(register):
    register(NewtonCartPoleConfig, mb.lazy_factory(f"{__name__}.cartpole:NewtonCartPole", requires=_REQUIRES,
                                                   extra="newton"))
    register(NewtonAntConfig, mb.lazy_factory(f"{__name__}.ant:NewtonAnt", requires=_REQUIRES, extra="newton"))
    register(NewtonHopperConfig, mb.lazy_factory(f"{__name__}.hopper:NewtonHopper", requires=_REQUIRES,
                                                 extra="newton"))
    register(NewtonHumanoidConfig, mb.lazy_factory(f"{__name__}.humanoid:NewtonHumanoid", requires=_REQUIRES,
                                                   extra="newton"))
