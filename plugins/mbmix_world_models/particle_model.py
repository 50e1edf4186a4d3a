"""``particle_gnn``: one network shared by every particle of a particle system.

Why: an MLP over a cloth's flat 390-entry state must relearn the same spring law for each of its 64
particles, sees inputs scaled over four orders of magnitude and learns even the gripped particles, which
the env knows exactly. Cloth dynamics are local and identical across particles (mesh graph networks, Pfaff
et al., ICLR 2021): this model uses that structure, declared by the env (:class:`mbmix_fw.ParticleLayout`).

Two architectures (``architecture``, a setting):

- ``integrator`` (default, :mod:`mbmix_world_models.particle_integrator`): learned spring and per-particle
  forces, integrated by the env's own ``substeps`` semi-implicit Euler substeps. Measured on the cloth
  (``benchmarks/cloth_model_accuracy.py``, ``benchmarks/RESULTS.md``): it learns the three spring
  stiffnesses (to 11 %) and reaches held-out Jacobian errors of 0.17 / 0.05, where one-shot message passing
  (2 rounds) stays at 0.70 / 0.40 (one step of the stiff cloth is an oscillatory map reaching several
  cells). Its fit costs ~12× ``sobolev_mlp``'s per transition (the substeps, differentiated twice;
  ``benchmarks/particle_fit_cost.py``, 24× before the substep loop was laid out particles-first).
- ``message_passing`` (the ablation), described below.

Both pass the driven particles and the layout's ``extra`` entries through **exactly** (the env's
``exact_step``): their values and Jacobians are the env's.

``message_passing``, per step, for every env ``n`` and particle ``p``:

Per step, for every env ``n`` and particle ``p`` (``B`` envs × ``P`` particles in one forward):

- **inputs**, each group normalised by its own running statistics (per axis): the particle's velocity;
  its absolute position on the layout's ``absolute_axes`` only (the cloth: height above the ground); a
  driven flag and, for driven particles, their exactly known next velocity (how the action enters); per
  coupling ``p ← q`` (both directions of every spring): ``x_q − x_p``, ``v_q − v_p``, the strain
  ``|x_q − x_p| / L − 1`` and an embedding of the spring's kind.
- **network**: encoders to width ``H``, then ``rounds`` rounds of ``m_pq = φ(e_pq, h_p, h_q)``,
  ``e_pq += m_pq``, ``h_p += ψ(h_p, Σ_q m_pq)``, then a decoder to ``Δv_n`` (and a position correction
  ``c_n``). Neighbours live in a dense padded table ``[P, K]`` (``K`` = most couplings of a particle, 12 on
  the cloth): gathers, no scatter, which is fastest on CPU at these sizes.
- **outputs**: ``Δv = μ + σ ⊙ Δv_n``, ``v' = v + Δv``, ``x' = x + dt·(v + w·Δv) + (μ_c + σ_c ⊙ c_n)``
  with ``w = (substeps + 1)/(2·substeps)`` (the env's semi-implicit Euler for constant acceleration within
  the step) and the correction off when ``position_correction = false``.

Training: the same Sobolev loss as ``sobolev_mlp`` (:func:`mbmix_world_models.loss.sobolev_loss`) on the raw
prediction, the state error in units of the running std of each entry's one-step change (per axis,
pooled over particles; exact entries count with unit scale, their error is 0).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

import mbmix_fw as mb

from .evaluation import held_out_errors
from .fit_step import adamw
from .loss import sobolev_loss
from .model import RunningMoments
from .particle_integrator import LearnedForces

_ACTIVATIONS = {"silu": F.silu, "elu": F.elu, "tanh": torch.tanh}


def neighbour_table(pairs: torch.Tensor, particles: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense directed neighbour table of undirected ``pairs [E, 2]``: ``(neighbour [P, K], edge [P, K],
    mask [P, K])``; padded slots point at the particle itself, edge 0, mask False."""
    directed = torch.cat([pairs, pairs.flip(1)])
    edge_ids = torch.arange(len(pairs)).repeat(2)
    counts = torch.bincount(directed[:, 0], minlength=particles)
    width = max(int(counts.max()) if len(pairs) else 1, 1)
    neighbour = torch.arange(particles).unsqueeze(1).repeat(1, width)
    edge = torch.zeros(particles, width, dtype=torch.long)
    mask = torch.zeros(particles, width, dtype=torch.bool)
    order = torch.argsort(directed[:, 0], stable=True)
    receiver, sender, ids = directed[order, 0], directed[order, 1], edge_ids[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(receiver)) - starts[receiver]
    neighbour[receiver, slot], edge[receiver, slot], mask[receiver, slot] = sender, ids, True
    return neighbour, edge, mask


class _Linear(nn.Module):
    """``x W + b`` initialised like ``nn.Linear`` from a given generator (a seed fixes the model)."""

    def __init__(self, fan_in: int, fan_out: int, generator: torch.Generator, bias: bool = True):
        super().__init__()
        bound = fan_in ** -0.5
        self.weight = nn.Parameter((torch.rand(fan_in, fan_out, generator=generator) * 2 - 1) * bound)
        self.bias = nn.Parameter((torch.rand(fan_out, generator=generator) * 2 - 1) * bound) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x @ self.weight
        return out if self.bias is None else out + self.bias


class MessagePassing(nn.Module):
    """Encoder, ``rounds`` residual message-passing rounds on a dense neighbour table, decoder.

    ``forward(nodes [B, P, Fn], edges [B, P, K, Fe], kind_ids [P, K]) -> [B, P, out]``. A round's message
    ``m_pq = act(e_pq A + h_p B + h_q C)`` has its own (small) width ``message_width``: ``e A`` is computed
    once, ``h B`` and ``h C`` once per particle and gathered, so a coupling costs a few elementwise operations
    of width ``message_width`` per round; the per-particle update ``h_p += ψ(h_p, Σ_q m_pq)`` carries the
    width ``hidden``. Why: at ``[B, P, K, H]`` the elementwise work of the double backward (activation
    derivatives) dominates the fit, not the matrix products (profiled on the cloth, 1 CPU thread).
    """

    def __init__(self, node_features: int, edge_features: int, kinds: int, hidden: int, message_width: int,
                 rounds: int, out: int, neighbour: torch.Tensor, mask: torch.Tensor, activation: str,
                 generator: torch.Generator):
        super().__init__()
        H, W, self.act = hidden, message_width, _ACTIVATIONS[activation]
        self.node_in = _Linear(node_features, H, generator)
        self.edge_in = nn.ModuleList(_Linear(edge_features, W, generator) for _ in range(rounds))
        self.kind_embedding = nn.Parameter(torch.randn(rounds, kinds, W, generator=generator) * 0.1)
        self.message_receiver = nn.ModuleList(_Linear(H, W, generator, bias=False) for _ in range(rounds))
        self.message_sender = nn.ModuleList(_Linear(H, W, generator, bias=False) for _ in range(rounds))
        self.update_hidden = nn.ModuleList(_Linear(H + W, H, generator) for _ in range(rounds))
        self.update_out = nn.ModuleList(_Linear(H, H, generator) for _ in range(rounds))
        self.decode_hidden = _Linear(H, H, generator)
        self.decode_out = _Linear(H, out, generator)
        with torch.no_grad():  # start near "no change": the first fits move from the mean step, not noise
            self.decode_out.weight.mul_(0.1)
        self.register_buffer("neighbour", neighbour, persistent=False)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, nodes: torch.Tensor, edges: torch.Tensor, kind_ids: torch.Tensor) -> torch.Tensor:
        act, nb = self.act, self.neighbour
        mask = self.mask.to(nodes.dtype).unsqueeze(-1)  # [P, K, 1]
        h = act(self.node_in(nodes))  # [B, P, H]
        for r in range(len(self.edge_in)):
            pre = (self.edge_in[r](edges) + self.kind_embedding[r][kind_ids] + self.message_receiver[r](h).unsqueeze(2)
                   + self.message_sender[r](h)[:, nb])  # [B, P, K, W]
            incoming = (act(pre) * mask).sum(2)
            h = h + self.update_out[r](act(self.update_hidden[r](torch.cat([h, incoming], -1))))
        return self.decode_out(act(self.decode_hidden(h)))


class ParticleGNN(mb.WorldModel):
    """The ``particle_gnn`` world model (see the module docstring for the two architectures).

    ``alpha_s = alpha_a = 0`` is the plain-MSE model (then ``probes`` is 0). Checkpointing as
    :class:`~mbmix_world_models.SobolevMLP`: AdamW's state and the probe generator are extra state inside
    ``state_dict()``, so ``load_state_dict(state_dict())`` makes the next ``fit`` identical; the neighbour
    table is rebuilt from the env's layout, not saved.
    """

    reports = mb.HELD_OUT_MODEL_ERRORS  # evaluation.held_out_errors

    def __init__(self, layout: mb.ParticleLayout, state_dim: int, action_dim: int, *,
                 architecture: str = "integrator", hidden: int = 16, message_width: int = 0, rounds: int = 2,
                 activation: str = "silu", position_correction: bool = True, alpha_s: float = 1.0,
                 alpha_a: float = 1.0, probe_source: str = "adjoint", probes: int = 1,
                 jacobian_fraction: float = 1.0, substeps: int | None = None, lr: float = 1e-2,
                 weight_decay: float = 0.0, batch_size: int = 64, buffer_capacity: int = 100_000,
                 seed: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__()
        if (alpha_s > 0 or alpha_a > 0) and probes < 1:
            raise ValueError("alpha_s/alpha_a > 0 need probes >= 1 (set probes, or both alphas to 0)")
        self.layout, self.state_dim, self.action_dim = layout, state_dim, action_dim
        self.alpha_s, self.alpha_a = float(alpha_s), float(alpha_a)
        if probe_source not in ("adjoint", "random"):
            raise ValueError(f"probe_source must be 'adjoint' or 'random', got {probe_source!r}")
        self.probe_source = probe_source
        self.probes = (1 if probe_source == "adjoint" else probes) if (alpha_s > 0 or alpha_a > 0) else 0
        self.batch_size, self.buffer_capacity = batch_size, buffer_capacity
        self.jacobian_fraction = float(jacobian_fraction)
        self.substeps = layout.substeps if substeps is None else int(substeps)
        """Integrator substeps per env step (the env's own by default: then the structure is exact)."""
        self.position_correction = position_correction
        P, d = layout.particles, layout.dim
        self.absolute_axes = list(layout.absolute_axes)
        neighbour, edge, mask = neighbour_table(layout.neighbours, P)
        self.register_buffer("rest", layout.rest_lengths[edge].to(dtype), persistent=False)  # [P, K]
        self.register_buffer("kind_ids", layout.kinds[edge] if len(layout.neighbours) else edge, persistent=False)
        driven = torch.zeros(P, dtype=torch.bool)
        driven[layout.driven] = True
        self.register_buffer("driven_mask", driven.view(1, P, 1), persistent=False)
        self.register_buffer("driven_index", layout.driven.clone(), persistent=False)
        node_features = d + len(self.absolute_axes) + 1 + d
        edge_features = 2 * d + 1
        generator = torch.Generator().manual_seed(seed)
        self.architecture = architecture
        if architecture == "message_passing":
            self.net = MessagePassing(node_features, edge_features, max(layout.num_edge_kinds, 1), hidden,
                                      message_width, rounds, 2 * d if position_correction else d, neighbour, mask,
                                      activation, generator)
        elif architecture == "integrator":
            # Linear springs start at 1/(h²·couplings) per unit mass: the stiffness at which the env's substep
            # h = dt/substeps is about at its stability bound (envs choose substeps that way), so the fit starts
            # in the right oscillation regime instead of at zero stiffness (a local minimum of the Jacobian
            # loss: with dt²·k/m ≈ 8 on the cloth, ∂s'/∂s is oscillatory in k).
            h = layout.dt / self.substeps
            stiffness = 1.0 / (h * h * neighbour.shape[1])
            self.net = LearnedForces(max(layout.num_edge_kinds, 1), d + len(self.absolute_axes), d, message_width,
                                     hidden, activation, generator, stiffness)
            self.net.register_buffer("neighbour", neighbour, persistent=False)
            self.net.register_buffer("mask", mask, persistent=False)
        else:
            raise ValueError(f"unknown architecture {architecture!r}; expected 'integrator' or 'message_passing'")
        self.register_buffer("pairs", layout.neighbours.clone(), persistent=False)
        self.register_buffer("pair_rest", layout.rest_lengths.to(dtype), persistent=False)
        self.register_buffer("pair_kinds", layout.kinds.clone(), persistent=False)
        self.closing_speed_stats = RunningMoments(1)
        self.velocity_stats = RunningMoments(d)
        self.height_stats = RunningMoments(max(len(self.absolute_axes), 1))
        self.driven_velocity_stats = RunningMoments(d)
        self.offset_stats = RunningMoments(d)
        self.relative_velocity_stats = RunningMoments(d)
        self.strain_stats = RunningMoments(1)
        self.velocity_change_stats = RunningMoments(d)
        self.correction_stats = RunningMoments(d)
        self.position_change_stats = RunningMoments(d)
        self.to(device=device, dtype=dtype)
        self.optimizer = adamw(self.net.parameters(), lr, weight_decay)
        self._probe_generator = torch.Generator().manual_seed(seed + 1)
        self.fit_steps = 0

    @classmethod
    def from_config(cls, config, ctx: mb.BuildContext) -> "ParticleGNN":
        env = ctx.env
        if env is None:
            raise mb.PluginError("world_model 'particle_gnn' needs the env built first (ctx.env is None)")
        kind = getattr(getattr(env, "config", None), "kind", type(env).__name__)
        layout = mb.checked_particle_layout(env, kind)
        if layout is None:
            raise mb.UserError(f"world_model 'particle_gnn' needs an env that declares its particles "
                               f"(DiffEnv.particle_layout()); env '{kind}' declares no particle layout: "
                               f"use world_model kind 'sobolev_mlp'")
        fields = config.model_dump(exclude={"kind"})
        return cls(layout, env.state_dim, env.action_dim, **fields, seed=ctx.seed, device=ctx.device,
                   dtype=ctx.dtype)

    # --- the dynamics -------------------------------------------------------------------------

    def _split(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead, L = state.shape[:-1], self.layout
        return (state[..., L.positions].reshape(*lead, L.particles, L.dim),
                state[..., L.velocities].reshape(*lead, L.particles, L.dim))

    def _raw_features(self, state: torch.Tensor, action: torch.Tensor, edges: bool = True) -> dict[str, torch.Tensor]:
        """Un-normalised feature groups of ``state [B, S]``, ``action [B, A]`` and the exact part of the step."""
        L = self.layout
        x, v = self._split(state)
        driven_x, driven_v, extra = L.exact_step(state, action)
        known_v = torch.zeros_like(v).index_copy(1, self.driven_index, driven_v.to(v.dtype))
        known_x = torch.zeros_like(x).index_copy(1, self.driven_index, driven_x.to(x.dtype))
        if not edges:
            return {"x": x, "v": v, "height": x[..., self.absolute_axes], "known_x": known_x, "known_v": known_v,
                    "driven_v": driven_v, "extra": extra}
        nb = self.net.neighbour
        offset = x[:, nb] - x.unsqueeze(2)  # [B, P, K, d]: x_q - x_p
        relative_v = v[:, nb] - v.unsqueeze(2)
        length = (offset.pow(2).sum(-1, keepdim=True) + 1e-12).sqrt()
        strain = length / self.rest.to(x.dtype).unsqueeze(-1) - 1
        return {"x": x, "v": v, "height": x[..., self.absolute_axes], "known_x": known_x, "known_v": known_v,
                "driven_v": driven_v, "extra": extra, "offset": offset, "relative_v": relative_v,
                "strain": strain}

    @staticmethod
    def _norm(value: torch.Tensor, stats: RunningMoments) -> torch.Tensor:
        return (value - stats.mean.to(value.dtype)) / stats.std(value.dtype)

    def _network_output(self, f: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised ``(Δv_n [B, P, d], c_n [B, P, d] or None)``."""
        driven = self.driven_mask.to(f["v"].dtype).expand(f["v"].shape[0], -1, 1)
        known_v = torch.where(self.driven_mask, self._norm(f["known_v"], self.driven_velocity_stats),
                              torch.zeros_like(f["known_v"]))
        nodes = [self._norm(f["v"], self.velocity_stats)]
        if self.absolute_axes:
            nodes.append(self._norm(f["height"], self.height_stats))
        nodes += [driven, known_v]
        edges = torch.cat([self._norm(f["offset"], self.offset_stats),
                           self._norm(f["relative_v"], self.relative_velocity_stats),
                           self._norm(f["strain"], self.strain_stats)], -1)
        out = self.net(torch.cat(nodes, -1), edges, self.kind_ids)
        d = self.layout.dim
        return out[..., :d], (out[..., d:] if self.position_correction else None)

    def _assemble(self, x_next, v_next, extra) -> torch.Tensor:
        """The flat next state from particle positions, velocities and ``extra`` (the layout tiles ``S``)."""
        L, n = self.layout, x_next.shape[0]
        parts = sorted([(L.positions.start or 0, x_next.reshape(n, -1)), (L.velocities.start or 0,
                        v_next.reshape(n, -1)), (L.extra.start or 0, extra.reshape(n, -1).to(x_next.dtype))],
                       key=lambda item: item[0])
        return torch.cat([part for _, part in parts], -1)

    def _pair_geometry(self, x: torch.Tensor, v: torch.Tensor):
        """Per coupling ``(strain [B, E, 1], closing speed [B, E, 1], direction n [B, E, d])``."""
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        d = x[:, j] - x[:, i]
        length = (d.pow(2).sum(-1, keepdim=True) + 1e-12).sqrt()
        n = d / length
        closing = ((v[:, j] - v[:, i]) * n).sum(-1, keepdim=True)
        return length / self.pair_rest.to(x.dtype).unsqueeze(-1) - 1, closing, n

    def pair_law(self, dtype: torch.dtype):
        """The learned scalar force per unit mass along each coupling, ``law(strain, closing)`` on ``[E, B]``
        raw strains and closing speeds, with this model's statistics (:meth:`LearnedForces.pair_law`)."""
        unit = (self.velocity_change_stats.std(dtype) / self.layout.dt).pow(2).mean().sqrt()
        mean = torch.cat([self.strain_stats.mean, self.closing_speed_stats.mean]).to(dtype)
        std = torch.cat([self.strain_stats.std(dtype), self.closing_speed_stats.std(dtype)])
        return self.net.pair_law(self.pair_kinds, self.pair_rest.to(dtype).unsqueeze(-1), mean, std, unit)

    def _integrate(self, f: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x', v') [B, P, d]`` of every particle by ``substeps`` semi-implicit Euler substeps of the learned
        forces (:mod:`mbmix_world_models.particle_integrator`).

        Layout: inside the loop positions and velocities are one tensor ``z = [x; v]`` of ``[2d, P, B]`` and
        every per-coupling tensor is ``[2d, E, B]``, ``[d, E, B]`` or ``[E, B]`` (particles and couplings
        first, envs last), so gathering a coupling's ends (``index_select``) and accumulating its forces
        (``index_add``) move contiguous rows of ``B`` numbers, the sums over the axes add whole slabs, one
        gather serves positions and velocities, and the per-particle network is one matrix product per
        layer. Profiled on the cloth (``benchmarks/particle_fit_cost.py --profile``): in ``[B, E, d]`` the
        gathers, their scatter-backwards and the sums over the last axis of 3 were most of the fit's time."""
        L, forces = self.layout, self.net
        K, d, P = self.substeps, L.dim, L.particles
        h = L.dt / K
        first = lambda t: t.permute(2, 1, 0)  # noqa: E731 - [B, P, d] -> [d, P, B]
        z = torch.cat([first(f["x"]), first(f["v"])]).contiguous()  # [2d, P, B]
        dtype, B = z.dtype, z.shape[-1]
        column = lambda t: t.to(dtype).reshape(-1, 1, 1)  # noqa: E731 - [n] -> [n, 1, 1]
        unit = self.velocity_change_stats.std(dtype) / L.dt
        offset, unit = column(self.velocity_change_stats.mean / L.dt), column(unit)
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        law, inverse_rest = self.pair_law(dtype), self.pair_rest.to(dtype).reciprocal().unsqueeze(-1)
        node_rows = torch.tensor([*self.absolute_axes, *range(d, 2 * d)], dtype=torch.long, device=z.device)
        node_mean = column(torch.cat([self.height_stats.mean[:len(self.absolute_axes)], self.velocity_stats.mean]))
        node_std = column(torch.cat([self.height_stats.std(torch.float64)[:len(self.absolute_axes)],
                                     self.velocity_stats.std(torch.float64)]))
        # driven particles at every substep k: x_K − (K − 1 − k)·h·v_K, v_K  ->  [K, 2d, G, B]
        driven = self.driven_index
        known_x, known_v = (first(f[name]).index_select(1, driven) for name in ("known_x", "known_v"))
        lag = column(torch.arange(K - 1, -1, -1, dtype=torch.float64) * h).unsqueeze(-1)  # [K, 1, 1, 1]
        known = torch.cat([known_x - lag * known_v, known_v.expand(K, *known_v.shape)], 1)
        for k in range(K):
            offset_ij, relative_v = (z.index_select(1, j) - z.index_select(1, i)).view(2, d, -1, B).unbind(0)
            length = ((offset_ij * offset_ij).sum(0) + 1e-12).sqrt()  # [E, B]
            inverse_length = length.reciprocal()
            closing = (relative_v * offset_ij).sum(0) * inverse_length
            strain = length * inverse_rest - 1
            pair_force = offset_ij * (law(strain, closing) * inverse_length)  # [d, E, B]
            nodes = (z.index_select(0, node_rows) - node_mean) / node_std
            psi = forces.node(nodes.view(-1, P * B)).view(d, P, B)
            accel = (psi * unit + offset).index_add(1, i, pair_force).index_add(1, j, pair_force, alpha=-1)
            v_free = z[d:] + h * accel
            z = torch.cat([z[:d] + h * v_free, v_free]).index_copy(1, driven, known[k])
        return first(z[:d]), first(z[d:])

    def predict(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Raw-space next states: ``state [..., S]``, ``action [..., A]`` → ``[..., S]`` (any leading shape)."""
        lead = state.shape[:-1]
        state, action = state.reshape(-1, state.shape[-1]), action.reshape(-1, action.shape[-1])
        if self.architecture == "integrator":
            f = self._raw_features(state, action, edges=False)
            x_next, v_next = self._integrate(f)
            return self._assemble(x_next, v_next, f["extra"]).reshape(*lead, -1)
        f = self._raw_features(state, action)
        dv_n, c_n = self._network_output(f)
        dt, w = self.layout.dt, self.layout.position_weight
        dv = self.velocity_change_stats.mean.to(dv_n.dtype) + self.velocity_change_stats.std(dv_n.dtype) * dv_n
        x_free = f["x"] + dt * (f["v"] + w * dv)
        if c_n is not None:
            x_free = x_free + self.correction_stats.mean.to(c_n.dtype) + self.correction_stats.std(c_n.dtype) * c_n
        x_next = torch.where(self.driven_mask, f["known_x"], x_free)
        v_next = torch.where(self.driven_mask, f["known_v"], f["v"] + dv)
        return self._assemble(x_next, v_next, f["extra"]).reshape(*lead, -1)

    def step(self, state: torch.Tensor, action: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """``[N, S]`` predicted next states, differentiable w.r.t. state, action and parameters
        (``generator`` unused: the model is deterministic)."""
        return self.predict(state, action)

    # --- training -----------------------------------------------------------------------------

    @torch.no_grad()
    def update_statistics(self, batch: mb.TransitionBatch) -> None:
        """Fold ``batch`` into the statistics of every feature group the architecture uses (``fit`` does this
        before each step; the integrator's couplings are measured per spring, not per neighbour slot)."""
        integrator = self.architecture == "integrator"
        f = self._raw_features(batch.state, batch.action, edges=not integrator)
        x_next, v_next = self._split(batch.next_state)
        free = ~self.driven_mask[0, :, 0]
        self.velocity_stats.update(f["v"])
        if self.absolute_axes:
            self.height_stats.update(f["height"])
        strain, closing, _ = self._pair_geometry(f["x"], f["v"])
        self.closing_speed_stats.update(closing)
        if integrator:
            self.strain_stats.update(strain)
        else:
            mask = self.net.mask
            if len(self.driven_index):
                self.driven_velocity_stats.update(f["driven_v"])
            self.offset_stats.update(f["offset"][:, mask])
            self.relative_velocity_stats.update(f["relative_v"][:, mask])
            self.strain_stats.update(f["strain"][:, mask])
        dv = (v_next - f["v"])[:, free]
        self.velocity_change_stats.update(dv)
        dt, w = self.layout.dt, self.layout.position_weight
        dx = (x_next - f["x"])[:, free]
        self.position_change_stats.update(dx)
        if not integrator:
            self.correction_stats.update(dx - dt * (f["v"][:, free] + w * dv))

    def error_scale(self, dtype: torch.dtype) -> torch.Tensor:
        """``[S]`` unit of the state error: the running std of each entry's one-step change (per axis,
        pooled over particles); 1 for the ``extra`` entries (exact, so their error is 0 anyway)."""
        L = self.layout
        pos = self.position_change_stats.std(dtype).repeat(L.particles)
        vel = self.velocity_change_stats.std(dtype).repeat(L.particles)
        extra = torch.ones((L.extra.stop or 0) - (L.extra.start or 0), dtype=dtype, device=pos.device)
        return self._assemble(pos[None], vel[None], extra[None])[0]

    def loss(self, batch: mb.TransitionBatch):
        """The Sobolev terms (``total, state, jacobian_s, jacobian_a``) on ``batch`` with the current
        statistics, differentiable w.r.t. the parameters."""
        rows = max(1, min(len(batch), round(self.jacobian_fraction * len(batch))))
        return sobolev_loss(self.predict, batch, self.error_scale(batch.state.dtype), self.alpha_s, self.alpha_a,
                            members=1, jacobian_rows=rows, probe_generator=self._probe_generator)

    def fit(self, batch: mb.TransitionBatch) -> dict[str, float]:
        """Update the statistics, then one AdamW step on :meth:`loss`. Metrics: ``model/loss``,
        ``model/state_loss`` and, for α > 0, ``model/jacobian_loss``.

        A batch, loss or gradient with a NaN/inf skips the step: the statistics are restored, nothing
        moves, and ``model/skipped = 1`` is returned (the trainer counts it). Under data parallelism a skip
        on one rank is a skip on every rank (:func:`mbmix_fw.any_rank`): a rank that skipped alone would leave
        the others waiting in the gradient all-reduce of the optimiser's pre-hook."""
        columns = (batch.state, batch.action, batch.next_state)
        finite_batch = mb.all_finite(columns)
        if bool(mb.any_rank(~finite_batch)):
            return {"model/skipped": 1.0}
        stats = [b for m in self.modules() if isinstance(m, RunningMoments) for b in m.buffers()]
        saved = [b.clone() for b in stats]
        self.update_statistics(batch)
        use_probes = self.probes > 0 and batch.probe_u is not None
        terms = self.loss(batch if use_probes else mb.TransitionBatch(batch.state, batch.action, batch.next_state))
        self.optimizer.zero_grad(set_to_none=True)
        parameters = [p for p in self.net.parameters() if p.requires_grad]
        # Gradients of the parameters only (not of the loss's state/action leaves: no pass back to the inputs).
        grads = torch.autograd.grad(terms.total, parameters, allow_unused=True)
        for parameter, grad in zip(parameters, grads):
            parameter.grad = grad
        grads = [g for g in grads if g is not None]
        finite = mb.all_finite([terms.total.detach(), *grads])
        if bool(mb.any_rank(~finite)):
            for buffer, value in zip(stats, saved):
                buffer.copy_(value)
            self.optimizer.zero_grad(set_to_none=True)
            return {"model/skipped": 1.0}
        self.optimizer.step()
        self.fit_steps += 1
        metrics = {"model/loss": float(terms.total.detach()), "model/state_loss": float(terms.state.detach())}
        if terms.jacobian_s is not None:
            metrics["model/jacobian_loss"] = float((terms.jacobian_s + terms.jacobian_a).detach())
        return metrics

    # --- evaluation ---------------------------------------------------------------------------

    def evaluate(self, batch: mb.TransitionBatch) -> dict[str, float]:
        """Held-out errors as :meth:`SobolevMLP.evaluate <mbmix_world_models.SobolevMLP.evaluate>` reports them
        (state error in units of :meth:`error_scale`, pooled relative Jacobian errors per block)."""
        return held_out_errors(self, batch, self.error_scale(batch.state.dtype))

    # --- checkpointing ------------------------------------------------------------------------

    def get_extra_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "probe_generator": self._probe_generator.get_state(),
                "fit_steps": self.fit_steps}

    def set_extra_state(self, state: dict) -> None:
        # Deep copy: Optimizer.load_state_dict keeps the given tensors, and Adam updates them in place.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self._probe_generator.set_state(state["probe_generator"].clone())
        self.fit_steps = int(state["fit_steps"])
