"""An env's particle layout: what a particle world model needs to know about a flat state.

Cloth, rope and soft bodies are many identical particles coupled to a few neighbours. A world model that
shares one network across particles (``particle_gnn``) can only do so if it knows which entries of the flat
state ``[N, S]`` are whose position and velocity, who is coupled to whom, and which parts of the next state
the env knows exactly from the action (a gripped or pinned particle, a gripper's own position). An env
declares that by overriding :meth:`mbmix_fw.DiffEnv.particle_layout`; an env without a layout cannot be
modelled that way, and the model says so when the run is built.

The layout is checked against the env's ``state_dim`` by :func:`checked_particle_layout` when a run is
built: a layout that does not match the state is a :class:`~mbmix_fw.UserError` naming the env and the
field, never a shape error deep inside a fit.
"""
from __future__ import annotations

from typing import Callable

import attrs
import torch

from ..errors import UserError

ExactStep = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor, torch.Tensor]"]
"""``exact_step(state [N, S], action [N, A]) -> (positions [N, K, d], velocities [N, K, d], extra [N, X])``:
the next positions and velocities of the ``K`` driven particles and the next ``extra`` entries, exactly as
the env's ``step`` computes them, differentiable w.r.t. ``state`` and ``action``."""


def _long(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.long).cpu()


def _float(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64).cpu()


@attrs.frozen(eq=False)
class ParticleLayout:
    """Where the particles are in an env's flat state, how they are coupled and what is known exactly.

    Fields (``P = particles``, ``d = dim``, ``E`` couplings, ``K`` driven particles):

    - ``positions``, ``velocities``: slices of the flat state, each holding ``P·d`` entries in the order
      ``[P, d]`` (particle-major).
    - ``extra``: the slice of every other state entry (a gripper's position…); may be empty. ``positions``,
      ``velocities`` and ``extra`` must tile ``[0, S)`` exactly. A particle model predicts no ``extra``
      entry: their next values come from ``exact_step``.
    - ``neighbours [E, 2]``: the couplings (springs), each unordered pair once; a model uses both directions.
    - ``rest_lengths [E]``: the rest length of each coupling (same unit as positions), ``> 0``.
    - ``edge_kinds [E]``: an integer class per coupling in ``[0, num_edge_kinds)`` (cloth: 0 stretch,
      1 shear, 2 bend) so one network can treat different springs differently; default all 0.
    - ``driven [K]``: particles whose next position and velocity the env sets exactly from the state and
      action (gripped, pinned); ``exact_step`` computes them. Each listed once.
    - ``exact_step``: see :data:`ExactStep`. Within the step a driven particle is taken to move at its next
      velocity ``v_K``, ending at its next position ``x_K`` (the cloth's grippers do exactly that).
    - ``absolute_axes``: position axes whose absolute value matters to the dynamics (the cloth: the height,
      axis 2, because of the ground); a model sees the other axes only relative to neighbours
      (translation invariance).
    - ``dt``: the env step (s); ``substeps``: semi-implicit Euler substeps per step. For constant
      acceleration within a step, ``x' = x + dt·(v + (substeps + 1)/(2·substeps)·Δv)`` — how a model
      integrates positions from its predicted velocity change ``Δv``.
    """

    particles: int
    dim: int
    positions: slice
    velocities: slice
    neighbours: torch.Tensor = attrs.field(converter=_long)
    rest_lengths: torch.Tensor = attrs.field(converter=_float)
    driven: torch.Tensor = attrs.field(converter=_long)
    exact_step: ExactStep
    dt: float
    extra: slice = slice(0, 0)
    edge_kinds: torch.Tensor | None = attrs.field(default=None, converter=attrs.converters.optional(_long))
    num_edge_kinds: int = 1
    absolute_axes: tuple[int, ...] = ()
    substeps: int = 1

    @property
    def kinds(self) -> torch.Tensor:
        """``[E]`` edge kinds (zeros when the layout gives none)."""
        return torch.zeros(len(self.neighbours), dtype=torch.long) if self.edge_kinds is None else self.edge_kinds

    @property
    def position_weight(self) -> float:
        """``(substeps + 1) / (2·substeps)``: the share of ``Δv`` in the step's displacement ``dt·(v + w·Δv)``."""
        return (self.substeps + 1) / (2 * self.substeps)

    def problems(self, state_dim: int) -> list[str]:
        """``"field: what is wrong"`` for every mismatch with a flat state of ``state_dim`` entries."""
        out: list[str] = []
        P, d = self.particles, self.dim
        if P < 1 or d < 1:
            return [f"particles/dim: must be >= 1, got particles={P}, dim={d}"]
        covered: list[tuple[int, int, str]] = []
        for name in ("positions", "velocities", "extra"):
            part = getattr(self, name)
            if not isinstance(part, slice) or part.step not in (None, 1):
                out.append(f"{name}: must be a slice with step 1, got {part!r}")
                continue
            start, stop = part.start or 0, part.stop if part.stop is not None else state_dim
            if not 0 <= start <= stop <= state_dim:
                out.append(f"{name}: slice {start}:{stop} is outside the state [0, {state_dim})")
                continue
            if name != "extra" and stop - start != P * d:
                out.append(f"{name}: slice {start}:{stop} holds {stop - start} entries, expected particles × dim "
                           f"= {P} × {d} = {P * d}")
                continue
            covered.append((start, stop, name))
        if len(covered) == 3:
            covered.sort()
            at = 0
            for start, stop, name in covered:
                if start != at and stop > start:
                    kind = "overlaps" if start < at else "leaves a gap before"
                    out.append(f"{name}: slice {start}:{stop} {kind} entry {at}; positions, velocities and extra "
                               f"must tile the state [0, {state_dim}) exactly")
                at = max(at, stop)
            if at != state_dim:
                out.append(f"extra: the slices end at {at}, the state has {state_dim} entries; put the rest in extra")
        nb = self.neighbours
        if nb.ndim != 2 or nb.shape[1] != 2:
            out.append(f"neighbours: expected shape [E, 2], got {list(nb.shape)}")
        else:
            if len(nb) and (nb.min() < 0 or nb.max() >= P):
                bad = nb[(nb < 0) | (nb >= P)][0]
                out.append(f"neighbours: particle index {int(bad)} is out of range [0, {P})")
            elif (nb[:, 0] == nb[:, 1]).any():
                out.append(f"neighbours: particle {int(nb[nb[:, 0] == nb[:, 1]][0, 0])} is coupled to itself")
            else:
                pairs = torch.sort(nb, dim=1).values
                unique = torch.unique(pairs, dim=0)
                if len(unique) != len(pairs):
                    out.append(f"neighbours: {len(pairs) - len(unique)} pair(s) listed twice")
            if tuple(self.rest_lengths.shape) != (len(nb),):
                out.append(f"rest_lengths: expected shape [{len(nb)}] (one per neighbour pair), "
                           f"got {list(self.rest_lengths.shape)}")
            elif not bool((torch.isfinite(self.rest_lengths) & (self.rest_lengths > 0)).all()):
                out.append("rest_lengths: must be finite and > 0")
            if self.edge_kinds is not None:
                if tuple(self.edge_kinds.shape) != (len(nb),):
                    out.append(f"edge_kinds: expected shape [{len(nb)}], got {list(self.edge_kinds.shape)}")
                elif len(nb) and (self.edge_kinds.min() < 0 or self.edge_kinds.max() >= self.num_edge_kinds):
                    out.append(f"edge_kinds: values must be in [0, num_edge_kinds = {self.num_edge_kinds})")
        driven = self.driven
        if driven.ndim != 1:
            out.append(f"driven: expected a 1-D list of particle indices, got shape {list(driven.shape)}")
        elif len(driven) and (driven.min() < 0 or driven.max() >= P):
            bad = int(driven[(driven < 0) | (driven >= P)][0])
            out.append(f"driven: particle index {bad} is out of range [0, {P})")
        elif len(torch.unique(driven)) != len(driven):
            values, counts = torch.unique(driven, return_counts=True)
            out.append(f"driven: particle {int(values[counts > 1][0])} is listed twice")
        if any(not 0 <= axis < d for axis in self.absolute_axes) or len(set(self.absolute_axes)) != len(
                self.absolute_axes):
            out.append(f"absolute_axes: must be distinct axes in [0, {d}), got {self.absolute_axes}")
        if not self.dt > 0 or self.substeps < 1:
            out.append(f"dt/substeps: need dt > 0 and substeps >= 1, got dt={self.dt}, substeps={self.substeps}")
        return out


def checked_particle_layout(env, name: str | None = None) -> ParticleLayout | None:
    """``env.particle_layout()`` checked against ``env.state_dim``; ``None`` when the env declares none.

    ``env`` is a :class:`~mbmix_fw.DiffEnv` (not imported here: ``env.py`` refers to this module).

    Raises :class:`~mbmix_fw.UserError` ``env 'NAME': particle_layout().FIELD: …`` on the first mismatch.
    """
    layout = env.particle_layout()
    if layout is None:
        return None
    label = name or type(env).__name__
    if not isinstance(layout, ParticleLayout):
        raise UserError(f"env '{label}': particle_layout() returned {type(layout).__name__}, "
                        f"expected a ParticleLayout")
    problems = layout.problems(env.state_dim)
    if problems:
        raise UserError(f"env '{label}': particle_layout().{problems[0]}")
    return layout
