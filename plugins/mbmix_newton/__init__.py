"""Newton (NVIDIA's warp-based successor of warp.sim) robots as differentiable torch envs.

Env kinds: ``newton_cartpole`` (swing-up, the cheap CPU learning check), ``newton_ant`` (Newton's
``nv_ant.xml``), ``newton_hopper`` (Brax's ``hopper.xml``) and ``newton_humanoid`` (Newton's ``nv_humanoid.xml``,
48 substeps), the last three with DiffRL's observation, reward and termination and AHAC's contact signal
(``contact_stiffness``: the ``ahac`` scheduler runs on them).

**The humanoid's gradient** (:mod:`mbmix_newton.humanoid`): an earlier attempt found its tape 0.33 relative off
central differences w.r.t. the hinge angles in ground contact and suspected the off-tape contact detection or
Newton's D6 joint adjoint. Neither: differences with the detection frozen at the unperturbed pose agree with
re-detected ones to 0.2 % or better, and with the contact damping, friction and limit damping off the tape
agrees within 0.2 % (D6 and revolute coordinates alike). What was off was the step itself: DiffRL's humanoid
contact damping (5e3) and, at 16 substeps, its friction are past explicit stability on ``nv_humanoid``'s 1.1 kg
feet, which then chatter between sticking and slipping within the step, so the step jumps at the scale of a
finite difference; with 48 substeps (DiffRL's humanoid value) and damping 1e3 it agrees within 1e-2 standing on
its feet (tested), and where differences still disagree they straddle a contact starting or a limit reached
within the step (benchmarks/RESULTS.md, "Newton humanoid").

Each is an :class:`mbmix_fw.DiffEnv` whose
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
