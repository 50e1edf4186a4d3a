"""Config models of the Newton envs: pydantic only, so registration and recipe validation import no newton/warp.

Every default is documented with its source: DiffRL's published task definitions (Xu et al., "Accelerated
Policy Learning with Parallel Differentiable Simulation", ICLR 2022 -- SHAC -- and its appendix), Newton's own
assets, or ours (marked "ours", with the reason).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

import mbmix_fw as mb


class NewtonCartPoleConfig(mb.EnvConfig):
    """Cart-pole swing-up on Newton's Featherstone solver (see :mod:`mbmix_newton.cartpole`)."""

    kind: Literal["newton_cartpole"] = "newton_cartpole"
    num_envs: mb.NumEnvs = 16
    """Cart-poles simulated in parallel, all in one Newton model (one world each)."""
    episode_length: mb.Steps = 240
    """Steps per episode: 240 × 1/60 s = 4 s, SHAC's cart-pole swing-up episode."""
    dt: float = Field(1 / 60, gt=0)
    """Env step (s): SHAC's 60 Hz control rate."""
    substeps: int = Field(4, ge=1, le=64)
    """Featherstone substeps per env step (ours: 4 keep the 1-m pole's semi-implicit integration accurate to
    well under 1 % energy drift over an episode at the default strength)."""
    cart_mass: float = Field(1.0, gt=0)
    """Cart mass (kg) (ours: the classic cart-pole's 1 kg)."""
    pole_mass: float = Field(0.5, gt=0)
    """Pole mass (kg), a uniform rod (ours)."""
    pole_length: float = Field(1.0, gt=0)
    """Pole length (m); the joint is at one end (ours)."""
    max_force: float = Field(20.0, gt=0)
    """Force on the cart (N) at action ±1 (ours: enough to swing the pole up in about two pumps, so a short
    CPU run learns it)."""
    reset_noise: float = Field(0.1, ge=0)
    """Reset: cart position, pole angle (about hanging down) and both velocities ~ U(-reset_noise, reset_noise)."""
    angle_weight: float = Field(1.0, ge=0)
    """Reward weight of θ² (θ the pole angle from upright, wrapped to (-π, π]): SHAC's cart-pole reward."""
    angular_velocity_weight: float = Field(0.1, ge=0)
    """Reward weight of θ̇²: SHAC's cart-pole reward."""
    position_weight: float = Field(0.05, ge=0)
    """Reward weight of x²: SHAC's cart-pole reward."""
    velocity_weight: float = Field(0.1, ge=0)
    """Reward weight of ẋ²: SHAC's cart-pole reward."""
    action_weight: float = Field(0.0, ge=0)
    """Reward weight of a² (SHAC's cart-pole has none)."""


class NewtonLocomotionConfig(mb.EnvConfig):
    """Shared fields of the contact-rich robots (ant, hopper): Featherstone with ground contact.

    The defaults are DiffRL's ant; the hopper overrides the constants its DiffRL task sets differently (each
    override says so)."""

    num_envs: mb.NumEnvs = 16
    """Robots simulated in parallel, all in one Newton model (one world each, one shared ground plane)."""
    episode_length: mb.Steps = 1000
    """Steps per episode: DiffRL's 1000."""
    dt: float = Field(1 / 60, gt=0)
    """Env step (s): DiffRL's 60 Hz."""
    substeps: int = Field(16, ge=1, le=256)
    """Featherstone substeps per env step: DiffRL's 16 (sim dt 1/960 s). The solver's mass-matrix update
    interval is set to this (see :mod:`mbmix_newton.bridge`)."""
    action_strength: float = Field(200.0, gt=0)
    """Joint torque (N·m) at action ±1 times the joint's gear (DiffRL: 200 for ant and hopper; the
    assets' ``gear`` attributes are not used, see the env docstrings)."""
    contact_ke: float = Field(4.0e3, gt=0)
    """Contact normal stiffness: DiffRL's ant 4e3."""
    contact_kd: float = Field(1.0e3, ge=0)
    """Contact damping: DiffRL's ant 1e3."""
    contact_kf: float = Field(3.0e2, ge=0)
    """Contact friction stiffness: DiffRL's ant 3e2."""
    contact_mu: float = Field(0.75, ge=0)
    """Friction coefficient: DiffRL's ant 0.75."""
    limit_ke: float = Field(1.0e3, ge=0)
    """Joint-limit stiffness: DiffRL's ant and hopper 1e3."""
    limit_kd: float = Field(10.0, ge=0)
    """Joint-limit damping: DiffRL's ant and hopper 10."""
    reset_noise: float = Field(0.1, ge=0)
    """Reset noise scale (DiffRL's stochastic init; how it enters: each env's docstring)."""


class NewtonAntConfig(NewtonLocomotionConfig):
    """Ant on Newton (``nv_ant.xml``, Newton's asset); DiffRL's observation, reward and termination."""

    kind: Literal["newton_ant"] = "newton_ant"
    termination_height: float = Field(0.27, ge=0)
    """Torso height (m) below which the episode ends: DiffRL's ant 0.27."""
    up_weight: float = Field(0.1, ge=0)
    """Reward weight of the up-projection: DiffRL's ant 0.1."""
    heading_weight: float = Field(1.0, ge=0)
    """Reward weight of the heading projection: DiffRL's ant 1."""
    height_weight: float = Field(1.0, ge=0)
    """Reward weight of (height − termination_height): DiffRL's ant 1."""
    action_penalty: float = Field(0.0, ge=0)
    """Reward weight of −|a|²: DiffRL's ant 0."""


class NewtonHopperConfig(NewtonLocomotionConfig):
    """Hopper on Newton (Brax's ``hopper.xml``); DiffRL's observation, reward and termination
    (:mod:`mbmix_newton.hopper`). Heights and angles are joint coordinates: 0 is the asset's start pose."""

    kind: Literal["newton_hopper"] = "newton_hopper"
    contact_ke: float = Field(2.0e4, gt=0)
    """Contact normal stiffness: DiffRL's hopper 2e4."""
    contact_kd: float = Field(1.0e3, ge=0)
    """Contact damping: DiffRL's hopper 1e3."""
    contact_kf: float = Field(1.0e3, ge=0)
    """Contact friction stiffness: DiffRL's hopper 1e3."""
    contact_mu: float = Field(0.9, ge=0)
    """Friction coefficient: DiffRL's hopper 0.9 (Brax's asset: 0.9 on torso, thigh and leg, 2 on the foot;
    DiffRL's one value wins)."""
    joint_armature: float = Field(1.0, ge=0)
    """Armature (kg·m²) of the three hinges: DiffRL's hopper 1 (also Brax's asset default; the asset's root
    joints have 0, kept)."""
    joint_damping: float = Field(2.0, ge=0)
    """Viscous damping (N·m·s/rad) of the three hinges: DiffRL's hopper passes damping 2 and stiffness 0 to its
    MJCF parser (joint drive gains, as we read dflex: a drive to a zero target with no spring is a pure damper);
    Brax's asset says 1."""
    reset_noise: float = Field(0.05, ge=0)
    """Reset: ``U(-1, 1)·reset_noise`` on x, height, the hinge angles and every velocity, ``U(-1, 1)·reset_noise``
    rad on the torso pitch: DiffRL's hopper 0.05 everywhere (its pitch: ``U(-0.5, 0.5)·0.1``, the same)."""
    termination_height: float = Field(-0.45)
    """Height coordinate (m, from the start pose) below which the episode ends: DiffRL's hopper −0.45."""
    termination_height_tolerance: float = Field(0.15, ge=0)
    """The height reward is zero at ``termination_height + this``: DiffRL's hopper 0.15."""
    termination_angle: float = Field(0.524, gt=0)
    """The angle reward ``1 − θ²/termination_angle²`` is zero at this torso pitch (rad): DiffRL's hopper π/6
    (0.524 in its config); it does not terminate the episode (DiffRL's neither)."""
    height_reward_scale: float = Field(1.0, ge=0)
    """Scale of the positive part of the height reward: DiffRL's hopper 1."""
    height_reward_cap: float = Field(0.3, ge=0)
    """The height difference is clipped to ``[-1, cap]`` before shaping: DiffRL's hopper 0.3."""
    height_penalty: float = Field(200.0, ge=0)
    """Below the threshold the height reward is ``−height_penalty·Δh²``: DiffRL's hopper 200."""
    action_penalty: float = Field(0.1, ge=0)
    """Reward weight of −|a|²: DiffRL's hopper 0.1."""


class NewtonHumanoidConfig(NewtonLocomotionConfig):
    """Humanoid on Newton (Newton's ``nv_humanoid.xml``); DiffRL's observation, reward and termination
    (:mod:`mbmix_newton.humanoid`). Heights are the torso's z in metres (the ground at 0)."""

    kind: Literal["newton_humanoid"] = "newton_humanoid"
    substeps: int = Field(48, ge=1, le=256)
    """Featherstone substeps per env step: DiffRL's humanoid 48 (sim dt 1/2880 s). Also what the gradient needs
    here: at 16 the feet's contact friction flips between sticking and slipping within most substeps and the
    step is not smooth at the scale of a finite difference (benchmarks/RESULTS.md, "Newton humanoid")."""
    action_strength: float = Field(70.0, gt=0)
    """Torque (N·m) at action ±1 times the joint's gear (:data:`mbmix_newton.humanoid.GEARS`): DiffRL's humanoid
    scales its per-joint motor strengths (200 to 600 N·m) by 0.35, i.e. 70 N·m times strength/200."""
    contact_ke: float = Field(2.0e4, gt=0)
    """Contact normal stiffness: DiffRL's humanoid 2e4."""
    contact_kd: float = Field(1.0e3, ge=0)
    """Contact damping: **ours**, DiffRL's ant and hopper 1e3; DiffRL's humanoid says 5e3. Why not 5e3: the
    damper is integrated explicitly, and ``n·kd·dt/m`` -- four contacts (two capsules, two ends each) under a
    1.1 kg foot at dt 1/2880 s -- is 6.3 at 5e3, past explicit stability (2): measured, the feet chatter
    (about 100 stick/slip flips per step) and a dropped humanoid bounces to 2 m; at 1e3 the same product is
    1.3 (benchmarks/RESULTS.md, "Newton humanoid")."""
    contact_kf: float = Field(1.0e3, ge=0)
    """Contact friction stiffness: DiffRL's humanoid 1e3."""
    contact_mu: float = Field(0.75, ge=0)
    """Friction coefficient: DiffRL's humanoid 0.75."""
    reset_noise: float = Field(0.1, ge=0)
    """Reset: ``U(-1, 1)·reset_noise`` (m) on the torso position: DiffRL's humanoid 0.1."""
    reset_angle_noise: float = Field(0.2, ge=0)
    """Reset: ``U(-1, 1)·this`` (rad) on every hinge angle: DiffRL's humanoid 0.2."""
    reset_velocity_noise: float = Field(0.25, ge=0)
    """Reset: ``U(-1, 1)·this`` on every velocity: DiffRL's humanoid ``0.5·U(-0.5, 0.5)``, the same."""
    reset_tilt: float = Field(0.1309, ge=0)
    """Reset: the torso turned by ``U(-1, 1)·this`` rad about a random axis: DiffRL's humanoid ``U(-π/24, π/24)``
    (0.1309 rad)."""
    start_height: float = Field(1.35, gt=0)
    """Torso height (m) of the start pose: DiffRL's humanoid 1.35 (``nv_humanoid`` touches the ground with its
    feet at 1.2855, so an episode starts with a 6.5 cm drop)."""
    termination_height: float = Field(0.74, ge=0)
    """Torso height (m) below which the episode ends: DiffRL's humanoid 0.74."""
    termination_height_tolerance: float = Field(0.1, ge=0)
    """The height reward is zero at ``termination_height + this`` and capped at ``this`` above it: DiffRL's
    humanoid 0.1."""
    height_reward_scale: float = Field(10.0, ge=0)
    """Scale of the positive part of the height reward: DiffRL's humanoid 10."""
    height_penalty: float = Field(200.0, ge=0)
    """Below the threshold the height reward is ``−height_penalty·Δh²``: DiffRL's humanoid 200."""
    up_weight: float = Field(0.1, ge=0)
    """Reward weight of the up-projection: DiffRL's humanoid 0.1."""
    heading_weight: float = Field(1.0, ge=0)
    """Reward weight of the heading projection: DiffRL's humanoid 1."""
    action_penalty: float = Field(0.002, ge=0)
    """Reward weight of −|a|²: DiffRL's humanoid 0.002."""
    joint_velocity_scale: float = Field(0.1, ge=0)
    """The observation's hinge rates are scaled by this: DiffRL's humanoid 0.1."""
