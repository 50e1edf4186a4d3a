"""Newton (NVIDIA's warp-based successor of warp.sim) robots as differentiable torch envs.

Env kinds: ``newton_cartpole`` (swing-up, the cheap CPU learning check), ``newton_ant`` (Newton's
``nv_ant.xml``) and ``newton_hopper`` (Brax's ``hopper.xml``), the last two with DiffRL's observation, reward
and termination and AHAC's contact signal (``contact_stiffness``: the ``ahac`` scheduler runs on them).

**No humanoid yet, and why.** DiffRL's humanoid on Newton's ``nv_humanoid.xml`` (21 hinges, mostly in D6
joints; 48 substeps) was built (branch ``newton-humanoid-wip``, ``mbmix_newton/humanoid.py``) and failed the
check every Newton env here passes: one taped step's gradient w.r.t. the hinge angles against central
differences. Measured (float32, one 48-substep step, feet on the ground): 2 humanoids dropped for 30 steps from
a noise-free reset, **0.34 relative at eps 1e-3 and 0.33 at 3e-4** -- the same at both step sizes, so the tape,
not the differences, is off -- while w.r.t. actions 1.4e-3 and 3.3e-3 (fine); 2 humanoids 12 steps after a
noisy reset, 0.99 and 0.78. In the air the hinge gradient agrees to about 1 % (0.3 % at one substep; what
remains is float32 rounding around the stiff knee-limit term that dominates the sum). One humanoid at rest
(another random action) agrees better but not within 1e-2: torso height 9 % off, torso pitch 20 % off. What was not established is the cause. The two candidates: the feet are horizontal
capsules lying on the ground, so the contacts that collision detection finds (off the tape, held constant
within a substep: :meth:`mbmix_newton.bridge._Workspace.run`) change with the pose in a way the tape cannot
see, unlike the ant's and hopper's capsule-end contacts; or an adjoint of Newton's multi-axis D6 joint in
contact, the only joint type the humanoid adds. Shipping a kind whose gradient is this far off would make
every first-order result on it meaningless, so it is not registered. Each is an :class:`mbmix_fw.DiffEnv` whose
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
