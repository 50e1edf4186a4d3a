"""A block pushed against a wall with a penalty-spring contact: a task whose simulator gradients degrade as
one knob, the wall's stiffness, grows.

Why it is here: first-order methods (SHAC, MIX, MB-MIX) trust the simulator's Jacobians. Suh et al. 2022
("Do differentiable simulators give better policy gradients?") show where that trust breaks: stiff
contact makes the exact gradient of a rollout high-variance (and, in the rigid limit, blind to the
discontinuity). This env puts that failure on a dial, cheaply enough for many seeds on a CPU, so a
question such as "does a model that matches these Jacobians help, or one smoother than them?" can be
measured across it.

Physics (1-D, SI units). State ``[N, 2] = (x, v)``: the block's position and velocity; the wall's surface
is at ``x = 0`` and the block starts ``init_distance`` metres left of it. Action ``[N, 1]`` in ``[-1, 1]``
pushes with ``u = max_force · a``. With penetration ``d = x`` (positive inside the wall), each substep of
length ``h = dt / n`` is semi-implicit Euler::

    f  = u − b·v − k·φ(d) − c·v·χ(d)          φ(d) = max(0, d),  χ(d) = [d > 0]
    v' = v + h·f/m,    x' = x + h·v'

(Kelvin–Voigt contact: a spring k and a damper c acting only in contact, plus ground friction b.) With
``contact_smoothing = w > 0``, ``φ(d) = w·softplus(d/w)`` and ``χ(d) = sigmoid(d/w)``: a force field that
reaches ``w·ln 2·k`` outside the wall, the smoothing of Suh et al.'s randomized-smoothing discussion
made deterministic.

Stability. Semi-implicit Euler on an undamped spring is stable for ``h·sqrt(k/m) < 2``; damping adds a
rate ``(c+b)/m``. Unless ``substeps`` is set, ``n`` is the fewest substeps with
``h·(sqrt(k/m) + (c+b)/m) ≤ courant`` (default 0.5: a 4× margin on the bound, about 12 substeps per
contact period). Defaults (m = 1, c = b = 1, dt = 0.05): k = 1e2 → 2 substeps, 1e3 → 4, 1e4 → 11,
1e5 → 33.

What the knob changes. In contact the block is a damped oscillator of frequency ``ω = sqrt(k/m)`` and
damping ratio ``ζ = c / (2 sqrt(k m))``. Over one control step its state Jacobian is close to
``[[cos ωΔ, sin ωΔ / ω], [−ω sin ωΔ, cos ωΔ]]·e^{−cΔ/2m}`` (``Δ`` the time spent in contact), so:

- the entry ``∂v'/∂x`` grows like ``sqrt(k)`` and its sign is the phase of an oscillation the policy
  does not see: across random starts the gradient of a window's return becomes large and of random
  sign — high variance, little information;
- with ``c`` fixed the decay per step ``e^{−cΔ/2m}`` does not depend on k, while ``ζ`` falls, so the
  restitution of an impact ``e^{−πζ/sqrt(1−ζ²)}`` rises towards 1: stiffer walls bounce more;
- in the rigid limit the return is discontinuous in the actions where an impact starts or stops,
  which no Jacobian of the sampled trajectory reports.

At small k the wall is soft (a block pushed with 5 N sinks 5 cm at k = 100) and the Jacobians are
O(1) and informative. The task is the same at every k: bring the block to the wall and hold it
there.

Reward ``−((x − x_goal)² + action_cost·a²)`` on the state before the step, goal ``x_goal = 0`` (the
wall's surface): the policy has to arrive fast without bouncing back, then press. Observation
``(x − x_goal, v)``. Episodes never terminate.

The contact task (``press_force = F* > 0``). On the position task above the return is made on the approach,
free motion where every k gives the same exact gradients, and contact decides only the last few points (the
stiffness study at 5 seeds: every method within 2–3 points of a PD controller at every k). With a force target
the return is made in contact instead: the reward is

    −(((F̄ − F*) / max_force)² + action_cost·a²),    F̄ = (1/dt)·∫ wall force over the control step,

the mean force the wall exerts during the step (what a force sensor averaging over the step reads). A block
out of contact scores ``(F*/max_force)²`` below the best on every step and its reward has no gradient at all:
every bit of the return's gradient comes through the contact. At rest in contact the wall's force equals the
push, so the best policy arrives, stops, and pushes with ``a = F*/max_force``. How it arrives is what the knob
changes: an impact at speed ``v₀`` returns a momentum ``(1 + e)·m·v₀``, e the restitution, and a stiff wall
(e → 1, the contact lasting ``π/ω`` ≪ dt) delivers it within one step: ``F̄ ≈ (1+e)·m·v₀/dt``, 80 N for a
2 m/s impact at k = 1e5 (a penalty ≈ 240 on that one step) where a soft wall (k = 1e2, ω = 10/s) spreads it
over about six steps at 13 N. Then the nearly elastic block rattles against the wall, shedding energy only
through drag and the small contact damping, unless the policy damps it — through exactly the Jacobians that the
knob degrades. So on this task landing softly and damping the rattle is the return, and the gradients that
should teach it are the stiff ones.

F̄ needs no extra state: summing the substep update ``m(v_{i+1} − v_i) = h(u − b·v_i − F_i)`` over the n
substeps and using ``x' − x = h·Σ_{i=1..n} v_i`` gives exactly (semi-implicit Euler, no approximation)

    F̄ = u − (b·((x' − x) − h·(v' − v)) + m·(v' − v)) / dt,

which is linear in ``(x, v, x', v', u)``: its gradient reaches the policy through the step's Jacobian, the
contact's. (The choice of a force target, of ``max_force`` as its scale and of the mean over a step rather
than the force at the step's start is ours: the sampled force of a contact that oscillates faster than the
control step aliases, its mean does not.)

``contact_stiffness`` reports AHAC's measure at the start of each step: the contact force over the
block's acceleration floored at 1 m/s², ``|k·φ(d) + c·v·χ(d)| / max(|f/m|, 1)`` (kg).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

import mbmix_fw as mb

from .configs import WallPushConfig


class WallPush(mb.DiffEnv):
    """A block pushed against a penalty-spring wall (module docstring: physics, stability, the knob)."""

    diverged_magnitude = 1e4
    """Positions of metres and speeds of metres per second: 1e4 is far outside anything the wall allows."""

    def __init__(self, config: WallPushConfig, ctx: mb.BuildContext | None = None):
        ctx = ctx or mb.BuildContext.cpu()
        self.config = config
        self.num_envs, self.episode_length = config.num_envs, config.episode_length
        self.state_dim, self.obs_dim, self.action_dim = 2, 2, 1
        self.device, self.dtype = ctx.device, ctx.dtype
        self.substeps = config.substep_count()
        self.goal = 0.0

    def reset(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.config
        u = torch.rand(n, 2, generator=generator, device=self.device, dtype=self.dtype)
        low, high = c.init_distance
        x = -(low + (high - low) * u[:, 0])
        v = (2 * u[:, 1] - 1) * c.init_max_speed
        return torch.stack([x, v], -1)

    def force(self, action: torch.Tensor) -> torch.Tensor:
        """The push ``[N]`` (N) of actions ``[N, 1]`` (clamped to the contract's ``[-1, 1]``)."""
        return self.config.max_force * action[:, 0].clamp(-1.0, 1.0)

    def contact_force(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The wall's push on the block ``[N]`` (N, towards −x): ``k·φ(d) + c·v·χ(d)`` at ``d = x``."""
        c = self.config
        if c.contact_smoothing > 0:
            w = c.contact_smoothing
            return c.stiffness * w * F.softplus(x / w) + c.contact_damping * v * torch.sigmoid(x / w)
        inside = (x > 0).to(x.dtype)
        return c.stiffness * x.clamp_min(0.0) + c.contact_damping * v * inside

    def step(self, state, action, generator=None):
        c = self.config
        x, v = state[:, 0], state[:, 1]
        u = self.force(action)
        h = c.dt / self.substeps
        for _ in range(self.substeps):
            v = v + h / c.mass * (u - c.drag * v - self.contact_force(x, v))
            x = x + h * v
        return torch.stack([x, v], -1)

    def mean_wall_force(self, state, action, next_state) -> torch.Tensor:
        """The wall's force on the block averaged over the control step ``[N]`` (N), from the step's ends
        alone (module docstring: the substep sum, exact for semi-implicit Euler)."""
        c = self.config
        h = c.dt / self.substeps
        dx, dv = next_state[:, 0] - state[:, 0], next_state[:, 1] - state[:, 1]
        return self.force(action) - (c.drag * (dx - h * dv) + c.mass * dv) / c.dt

    def reward(self, state, action, next_state):
        c = self.config
        a = action[:, 0].clamp(-1.0, 1.0)
        if c.press_force > 0:
            miss = (self.mean_wall_force(state, action, next_state) - c.press_force) / c.max_force
            return -(miss.pow(2) + c.action_cost * a.pow(2))
        return -((state[:, 0] - self.goal).pow(2) + c.action_cost * a.pow(2))

    def observe(self, state):
        return torch.stack([state[:, 0] - self.goal, state[:, 1]], -1)

    def contact_stiffness(self, state, action, next_state):
        c = self.config
        x, v = state[:, 0], state[:, 1]
        contact = self.contact_force(x, v)
        accel = (self.force(action) - c.drag * v - contact) / c.mass
        return (contact.abs() / accel.abs().clamp_min(1.0)).detach()
