"""``cloth_fold``: fold a square cloth lying on the ground in half, by grippers holding its corners.

**Physics** (:mod:`mbmix_warp.kernels`): a ``grid_size × grid_size`` mass-spring cloth with stretch,
shear and bending springs, smooth penalty contact and regularised Coulomb friction with the ground
``z = 0``, gravity and drag, integrated by semi-implicit Euler in ``substeps`` substeps per step. No
self-collision: the folded half may pass through the half below it (the reward does not need it).
Particle ``p = row·grid_size + column`` rests at ``((column - c)·h, (row - c)·h, particle_radius)`` with
``h = cloth_size / (grid_size - 1)`` and ``c = (grid_size - 1)/2``.

**State** ``[N, 6P + 3G]`` (``P = grid_size²`` particles, ``G`` grippers), flat:
``concat(positions [P, 3], velocities [P, 3], gripper positions [G, 3])``.

**Action** ``[N, 3G]`` in ``[-1, 1]``: each gripper's velocity ``max_speed · a`` (m/s) during the step
(clamped to ``[-1, 1]``: zero gradient outside the contract). A gripper moves freely above the ground: its
height stops at ``particle_radius`` (``z' = max(z + dt·v_z, particle_radius)``, so pushing into the
ground has no effect and no gradient). The particle it holds follows it exactly, at constant velocity
within the step (it ignores its forces).

**Fold and reward.** The fold line is the middle row: particle ``(row, col)`` with ``row < grid_size // 2``
belongs to the half that folds over, and its folded target is the *current* position of its mirror image
``(grid_size - 1 - row, col)``. The scored ("key") particles are, DaXBench-style, the corners and edges of
that half: its outer row (which holds the default grippers' corners) and its two side edges. The half
below must stay on the ground (a fold, not a cloth stood up on its edge). With ``D`` the mean over key
particles of ``|x_p - x_mirror(p)|_η + |z_mirror(p) - particle_radius|_η`` (``|d|_η = sqrt(|d|² + η²) - η``,
a norm smoothed at 0, ``η = h/100``) and ``D_flat`` its value for the flat rest cloth,

    fold quality  q = 1 - D / D_flat,       reward = q(next state) - action_cost · mean(a²)

so **q = 0 for the flat cloth, q = 1 for a perfect fold, q < 0 when the corners are pulled away**, and
the per-step reward is at most 1. An episode's return divided by ``episode_length`` is the average fold
quality over the episode (a policy that folds in the first half of an episode and holds scores about
0.5–0.7 of ``episode_length``).

**Observation** ``[N, 6G + 3K + 6Q]``, differentiable, of order 1 without normalisation (positions in
units of ``cloth_size``, velocities in units of ``max_speed``): gripper positions (3G); each gripper minus
the fold target of the particle it holds (3G); each key particle minus its fold target (3K); positions and
velocities of the ``Q`` particles on every ``obs_stride``-th row and column (6Q). The recipes switch the
policy's running observation normalisation off (``policy.normalize_obs = false``): a flat cloth's heights
and velocities barely vary at first, and dividing by their tiny standard deviations multiplies the
gradient along every observation → action path by hundreds (measured: actor gradient norms of 10³–10⁴).

**One bridge crossing per step**: only the physics crosses into warp (:mod:`mbmix_warp.bridge`); reward,
observation and termination are torch on the flat state, so :meth:`DiffEnv.transition`'s default
(``step`` then ``score``) already crosses once per step and is not overridden.
"""
from __future__ import annotations

import torch

import mbmix_fw as mb

from .bridge import ClothSimulator
from .configs import ClothFoldConfig
from .ground import ground_force
from .physics import ClothPhysics


class ClothFold(mb.DiffEnv):
    """The cloth-folding env (see the module docstring for state, action, reward and observation)."""

    draw_projection = "3d"
    """Matplotlib projection of the axes :meth:`draw` expects (``mbmix-fw render`` reads it)."""
    diverged_magnitude = 1e3
    """Observations are positions in units of ``cloth_size`` and velocities in units of ``max_speed``: a
    healthy cloth stays within a few units, so an entry beyond 1e3 (a cloth flung a thousand cloth-widths,
    or moving a thousand times faster than a gripper) is a diverged simulation, caught long before the
    default 1e6 (``mb.DiffEnv.diverged_magnitude``)."""

    def __init__(self, config: ClothFoldConfig, ctx: mb.BuildContext | None = None):
        ctx = ctx or mb.BuildContext.cpu()
        self.config = c = config
        self.device, self.dtype = ctx.device, ctx.dtype
        n = self.side = c.grid_size
        self.particles = n * n
        self.held = [(row % n) * n + (col % n) for row, col in c.grippers]
        self.num_grippers = len(self.held)
        self.spacing = c.cloth_size / (n - 1)
        pinned_by = [-1] * self.particles
        for gripper, particle in enumerate(self.held):
            pinned_by[particle] = gripper
        self.sim = ClothSimulator(ClothPhysics.from_config(c), pinned_by, device=self.device)

        rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        mirror = ((n - 1 - rows) * n + cols).reshape(-1)
        key = ((rows < n // 2) & ((rows == 0) | (cols == 0) | (cols == n - 1))).reshape(-1)
        self.key = torch.nonzero(key).reshape(-1).to(self.device)
        self.key_mirror = mirror[key].to(self.device)
        self.held_mirror = mirror[self.held].to(self.device)
        stride = range(0, n, c.obs_stride)
        self.observed = torch.tensor([r * n + q for r in stride for q in stride], device=self.device)
        centre = (n - 1) / 2
        rest = torch.stack([(cols - centre) * self.spacing, (rows - centre) * self.spacing,
                            torch.full((n, n), c.particle_radius)], -1).reshape(self.particles, 3)
        self.rest = rest.to(device=self.device, dtype=torch.float64)
        self.eta = self.spacing / 100
        self.flat_distance = float(self._distance(self.rest[None]).mean())

        self.num_envs, self.episode_length = c.num_envs, c.episode_length
        self.state_dim = 6 * self.particles + 3 * self.num_grippers
        self.action_dim = 3 * self.num_grippers
        self.obs_dim = 6 * self.num_grippers + 3 * len(self.key) + 6 * len(self.observed)

    # ---- the flat state
    def split(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views ``positions [N, P, 3]``, ``velocities [N, P, 3]``, ``gripper positions [N, G, 3]``."""
        n, P = state.shape[0], self.particles
        return (state[:, :3 * P].reshape(n, P, 3), state[:, 3 * P:6 * P].reshape(n, P, 3),
                state[:, 6 * P:].reshape(n, self.num_grippers, 3))

    def reset(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.config
        u = torch.rand(n, self.particles, 3, generator=generator, device=self.device, dtype=self.dtype)
        yaw = (2 * torch.rand(n, generator=generator, device=self.device, dtype=self.dtype) - 1) * c.reset_yaw
        noise = (2 * u - 1) * c.reset_noise
        noise[..., 2] = u[..., 2] * c.reset_noise
        rest = self.rest.to(self.dtype)
        cos, sin = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
        x = torch.stack([cos * rest[:, 0] - sin * rest[:, 1], sin * rest[:, 0] + cos * rest[:, 1],
                         rest[:, 2].expand(n, -1)], -1) + noise
        grippers = x[:, self.held]
        return torch.cat([x.reshape(n, -1), torch.zeros_like(x).reshape(n, -1), grippers.reshape(n, -1)], 1)

    def _grippers_next(self, grip: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``[N, G, 3]`` gripper positions after the step: moved at ``max_speed · clamp(a)``, not below the
        particle radius."""
        c = self.config
        commanded = grip + c.dt * c.max_speed * action.to(grip.dtype).clamp(-1.0, 1.0).reshape(grip.shape)
        floor = torch.full_like(commanded[..., 2:], c.particle_radius)
        return torch.cat([commanded[..., :2], torch.maximum(commanded[..., 2:], floor)], -1)

    def step(self, state, action, generator=None):
        x, v, grip = self.split(state)
        grip_next = self._grippers_next(grip, action)
        x_next, v_next = self.sim.step(x, v, grip, (grip_next - grip) / self.config.dt)
        n = state.shape[0]
        return torch.cat([x_next.reshape(n, -1), v_next.reshape(n, -1), grip_next.reshape(n, -1)], 1)

    # ---- the particle layout (for particle world models)
    def _held_next(self, state: torch.Tensor, action: torch.Tensor):
        """The exactly known part of the next state: held particles' positions and velocities ``[N, G, 3]``
        (the gripper's next position and its velocity during the step) and the grippers' positions ``[N, 3G]``."""
        grip = self.split(state)[2]
        grip_next = self._grippers_next(grip, action)
        return grip_next, (grip_next - grip) / self.config.dt, grip_next.reshape(state.shape[0], -1)

    def particle_layout(self) -> mb.ParticleLayout:
        """The ``grid_size²`` particles, their stretch (kind 0), shear (1) and bend (2) springs with the flat
        grid's rest lengths, the held particles driven by the grippers, the ground making the height absolute."""
        n, P, h = self.side, self.particles, self.spacing
        pairs, rest, kinds = [], [], []
        for kind, offsets, length in ((0, ((0, 1), (1, 0)), h), (1, ((1, 1), (1, -1)), h * 2 ** 0.5),
                                      (2, ((0, 2), (2, 0)), 2 * h)):
            for row in range(n):
                for col in range(n):
                    for dr, dc in offsets:
                        r, q = row + dr, col + dc
                        if 0 <= r < n and 0 <= q < n:
                            pairs.append((row * n + col, r * n + q))
                            rest.append(length)
                            kinds.append(kind)
        return mb.ParticleLayout(
            particles=P, dim=3, positions=slice(0, 3 * P), velocities=slice(3 * P, 6 * P),
            extra=slice(6 * P, self.state_dim), neighbours=pairs, rest_lengths=rest, edge_kinds=kinds,
            num_edge_kinds=3, driven=self.held, exact_step=self._held_next, absolute_axes=(2,),
            dt=self.config.dt, substeps=self.config.substeps)

    # ---- reward and observation: torch on the flat state
    def _distance(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, K]``: each key particle's smoothed distance to its fold target plus its mirror's height
        above the resting height (smooth at 0)."""
        gap = x[:, self.key] - x[:, self.key_mirror]
        lift = x[:, self.key_mirror, 2] - self.config.particle_radius
        return (torch.sqrt(gap.pow(2).sum(-1) + self.eta**2) + torch.sqrt(lift.pow(2) + self.eta**2)
                - 2 * self.eta)

    def fold_quality(self, state: torch.Tensor) -> torch.Tensor:
        """``[N]``: 0 for the flat rest cloth, 1 for a perfect fold (see the module docstring)."""
        return 1.0 - self._distance(self.split(state)[0]).mean(-1) / self.flat_distance

    def reward(self, state, action, next_state):
        return self.fold_quality(next_state) - self.config.action_cost * action.to(next_state.dtype).pow(2).mean(-1)

    def observe(self, state):
        x, v, grip = self.split(state)
        n, size, speed = state.shape[0], self.config.cloth_size, self.config.max_speed
        return torch.cat([
            grip.reshape(n, -1) / size,
            (grip - x[:, self.held_mirror]).reshape(n, -1) / size,
            (x[:, self.key] - x[:, self.key_mirror]).reshape(n, -1) / size,
            x[:, self.observed].reshape(n, -1) / size,
            v[:, self.observed].reshape(n, -1) / speed,
        ], 1)

    # ---- contact signal (DiffEnv.contact_stiffness: AHAC's scheduler reads it)
    @torch.no_grad()
    def contact_stiffness(self, state, action, next_state):
        """``[N]``: AHAC's ``‖F_contact / max(|a|, 1 m/s²)‖`` (kg) over the cloth's contacts.

        Contacts counted: the ground under every free particle (the kernels' penalty normal force with its
        damping and the regularised friction, evaluated at the step's start state) and each gripper on the
        particle it holds (the force that imposes the held particle's velocity change, ``m·(Δv/dt - g)``;
        the springs' pull the gripper also balances is not counted). ``a`` is each particle's mean
        acceleration over the step, ``(v' - v)/dt``. A cloth lying at rest scores about ``sqrt(P)·m·g``
        (each particle's weight carried by the ground or a gripper, divided by the 1 m/s² floor); a cloth
        hanging in the air from still grippers ``sqrt(G)·m·g`` (only the grippers touch it); pressing it
        into the ground raises it. Typical values of the default 8×8, 0.5 kg cloth: 0.3–0.7 kg."""
        c = self.config
        x, v, _ = self.split(state)
        _, v_next, _ = self.split(next_state)
        mass = self.sim.physics.particle_mass
        force = ground_force(c, x, v)
        acceleration = (v_next - v) / c.dt
        gravity = torch.tensor([0.0, 0.0, -c.gravity], dtype=force.dtype, device=force.device)
        force[:, self.held] = mass * (acceleration[:, self.held] - gravity)
        return (force / acceleration.abs().clamp_min(1.0)).flatten(1).norm(dim=1)

    # ---- pictures (mbmix-fw render)
    def draw(self, ax, state_row: torch.Tensor) -> None:
        """Draw one state ``[S]`` on 3-D matplotlib axes: the cloth's mesh, the grippers, the fold quality."""
        x, _, grip = (t[0].detach().cpu().double().numpy() for t in self.split(state_row.reshape(1, -1)))
        n, half = self.side, self.config.cloth_size * 0.8
        grid = x.reshape(n, n, 3)
        ax.plot_surface(grid[..., 0], grid[..., 1], grid[..., 2], color="tab:blue", alpha=0.35, linewidth=0)
        ax.plot_wireframe(grid[..., 0], grid[..., 1], grid[..., 2], color="navy", linewidth=0.5)
        folding = grid[: n // 2]
        ax.plot_wireframe(folding[..., 0], folding[..., 1], folding[..., 2], color="tab:orange", linewidth=0.8)
        ax.scatter(grip[:, 0], grip[:, 1], grip[:, 2], color="red", s=30, depthshade=False)
        ax.set_xlim(-half, half)
        ax.set_ylim(-half, half)
        ax.set_zlim(0, half)
        ax.set_box_aspect((1, 1, 0.5))
        quality = float(self.fold_quality(state_row.reshape(1, -1).double().cpu().to(self.device)))
        ax.set_title(f"fold quality {quality:.2f}", fontsize=8)
        ax.tick_params(labelsize=5)
