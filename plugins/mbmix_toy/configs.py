"""Config models of the toy envs, importable without torch so ``mbmix-fw plugins`` stays instant."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

import mbmix_fw as mb

MAX_TABLE_ENTRIES = 10**8
"""Most entries of the tabular MDP's transition table ``P [S, K, S]``."""

class PendulumConfig(mb.EnvConfig):
    kind: Literal["pendulum"] = "pendulum"
    num_envs: mb.NumEnvs = 64
    """Environments rolled out in parallel for training."""
    episode_length: mb.Steps = 200
    """Steps per episode (gym: 200)."""
    max_torque: float = Field(2.0, gt=0)
    """Torque (N·m) applied for action ±1 (gym: 2)."""
    max_speed: float = Field(8.0, gt=0)
    """Angular speed limit (rad/s) (gym: 8)."""
    speed_limit_width: float = Field(0.25, ge=0)
    """Width (rad/s) of the smooth speed limit; 0 = gym's hard clamp (zero gradient when saturated)."""
    dt: float = Field(0.05, gt=0, le=0.5)
    """Integration step (s) (gym: 0.05)."""
    gravity: float = Field(10.0, ge=0)
    """g (m/s²) (gym: 10)."""
    mass: float = Field(1.0, gt=0)
    """Pendulum mass m (kg) (gym: 1)."""
    length: float = Field(1.0, gt=0)
    """Pendulum length l (m) (gym: 1)."""
    init_max_speed: float = Field(1.0, ge=0)
    """Initial θ̇ ~ U(-init_max_speed, init_max_speed); initial θ ~ U(-π, π)."""


class LQRConfig(mb.EnvConfig):
    kind: Literal["lqr"] = "lqr"
    state_dim: int = Field(4, ge=1, le=256)
    """Dimension of the state s."""
    action_dim: int = Field(2, ge=1, le=256)
    """Dimension of the action a."""
    seed: int = Field(0, ge=0)
    """Seed of the random system matrices A and B (independent of the run seed)."""
    spectral_radius: float = Field(0.95, gt=0, le=2.0)
    """Spectral radius of A: < 1 stable, > 1 unstable without control."""
    action_scale: float = Field(1.0, gt=0)
    """Control u = action_scale · action."""
    state_cost: float = Field(1.0, gt=0)
    """Q = state_cost · I."""
    action_cost: float = Field(0.1, ge=0)
    """R = action_cost · I."""
    noise_std: float = Field(0.05, ge=0)
    """Standard deviation of the process noise w."""
    init_std: float = Field(1.0, ge=0)
    """Standard deviation of the initial state s_0 ~ N(0, init_std² I)."""
    episode_length: mb.Steps = 50
    """Steps per episode."""
    num_envs: mb.NumEnvs = 64
    """Systems rolled out in parallel for training."""


class TabularMDPConfig(mb.EnvConfig):
    kind: Literal["tabular_mdp"] = "tabular_mdp"
    n_states: int = Field(20, ge=2, le=10_000)
    """Number of states."""
    n_actions: int = Field(5, ge=2, le=1_000)
    """Number of actions."""
    seed: int = Field(0, ge=0)
    """Seed of the random rewards R and transitions P (independent of the run seed)."""
    transition_temperature: float = Field(0.5, gt=0)
    """Softmax temperature of the random transition rows: smaller = closer to deterministic."""
    relaxation: Literal["score", "straight_through"] = "score"
    """How the sampled next state carries gradient: ``score`` (unbiased) or ``straight_through`` (biased)."""
    episode_length: mb.Steps = 50
    """Steps per episode."""
    num_envs: mb.NumEnvs = 64
    """MDPs rolled out in parallel for training."""

    @field_validator("n_actions")
    @classmethod
    def _tables_fit_in_memory(cls, n_actions: int, info: ValidationInfo) -> int:
        """P has n_states² · n_actions float64 entries, built before any run starts: bound it here."""
        n_states = info.data.get("n_states")
        if n_states is not None and n_states * n_states * n_actions > MAX_TABLE_ENTRIES:
            raise ValueError(f"the transition table P would hold n_states² × n_actions = "
                             f"{n_states * n_states * n_actions:.3g} probabilities, more than the maximum "
                             f"{MAX_TABLE_ENTRIES:.0e} (800 MB of float64); lower n_states or n_actions")
        return n_actions


MAX_WALL_SUBSTEPS = 10_000
"""Most integration substeps per control step of ``wall_push`` (explicit or derived from the stiffness)."""


class WallPushConfig(mb.EnvConfig):
    kind: Literal["wall_push"] = "wall_push"
    num_envs: mb.NumEnvs = 64
    """Blocks rolled out in parallel for training."""
    episode_length: mb.Steps = 64
    """Control steps per episode."""
    stiffness: float = Field(1e3, gt=0, le=1e8)
    """The knob: the wall's penalty-spring constant k (N/m). The contact's natural frequency is sqrt(k/m), so
    the step Jacobian's velocity-position entry in contact grows like sqrt(k) and flips sign with the phase
    of the contact oscillation (see the module docstring)."""
    contact_damping: float = Field(1.0, ge=0)
    """Damping c (N·s/m) of the wall's spring, active only in contact. Held fixed while k grows, the damping
    ratio c / (2 sqrt(k m)) falls: stiffer walls are also bouncier, as in Suh et al. 2022's examples."""
    contact_smoothing: float = Field(0.0, ge=0)
    """Width w (m) of a softplus-smoothed penetration ``w·softplus(d / w)`` (and a sigmoid contact indicator
    for the damping); 0 = the hard ``max(0, d)`` and indicator ``d > 0``."""
    mass: float = Field(1.0, gt=0)
    """Block mass m (kg)."""
    max_force: float = Field(5.0, gt=0)
    """Push (N) applied for action ±1."""
    drag: float = Field(1.0, ge=0)
    """Linear ground friction b (N·s/m), always active: an unpushed block coasts to rest."""
    dt: float = Field(0.05, gt=0, le=0.5)
    """Control step (s); the policy acts once per step."""
    substeps: int | None = Field(None, ge=1, le=MAX_WALL_SUBSTEPS)
    """Semi-implicit Euler substeps per control step; ``None`` = the fewest with ``h·(sqrt(k/m) + (c+b)/m)
    <= courant`` for the substep h, which keeps the explicit integrator stable at any stiffness."""
    courant: float = Field(0.5, gt=0, lt=2.0)
    """The bound on ``h·(sqrt(k/m) + (c+b)/m)`` used when ``substeps`` is ``None``; semi-implicit Euler on an
    undamped spring is stable for ``h·sqrt(k/m) < 2``, and 0.5 also resolves a contact oscillation with
    about 12 substeps per period."""
    init_distance: tuple[float, float] = (0.5, 2.0)
    """The block starts this far (m) from the wall, uniformly, at a speed uniform in ±``init_max_speed``."""
    init_max_speed: float = Field(0.5, ge=0)
    """Initial speed bound (m/s)."""
    action_cost: float = Field(0.01, ge=0)
    """Reward weight of ``a²``."""
    press_force: float = Field(0.0, ge=0)
    """0 = the position task (reach the wall's surface and stay). Above 0, the contact task: the reward asks
    for this mean wall force F* (N) over each control step, ``−(((F̄ − F*)/max_force)² + action_cost·a²)``,
    so the return is made in contact (a free block scores ``(F*/max_force)²`` below the best every step, an
    impact far more); see the module docstring. At most ``max_force``: a block at rest feels the push."""

    @field_validator("init_distance")
    @classmethod
    def _distances_ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= value[0] <= value[1]:
            raise ValueError(f"init_distance must be (low, high) with 0 <= low <= high, got {value}")
        return value

    @model_validator(mode="after")
    def _substeps_bounded(self) -> "WallPushConfig":
        """A stiffness whose stable step needs too many substeps fails when the recipe is read; so does a
        force target no push can hold (at rest the wall's force equals the push, at most ``max_force``)."""
        self.substep_count()
        if self.press_force > self.max_force:
            raise ValueError(f"press_force {self.press_force:g} N exceeds max_force {self.max_force:g} N: "
                             "no push holds it")
        return self

    def substep_count(self) -> int:
        """The substeps each control step runs (``substeps``, or the stability bound's count)."""
        if self.substeps is not None:
            return self.substeps
        rate = math.sqrt(self.stiffness / self.mass) + (self.contact_damping + self.drag) / self.mass
        count = math.ceil(self.dt * rate / self.courant)
        if count > MAX_WALL_SUBSTEPS:
            raise ValueError(f"stiffness {self.stiffness:g} needs {count} substeps per step at courant "
                             f"{self.courant}, more than {MAX_WALL_SUBSTEPS}; lower the stiffness or dt")
        return max(1, count)
