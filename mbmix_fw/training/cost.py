"""What a run has spent: simulator forward steps, simulator vector-Jacobian products and wall time.

Why counted: methods are compared at equal budgets, and env steps alone hide the simulator work that
probes, held-out evaluations and backward passes add (``sim/steps``, ``sim/vjps``, ``time/wall_s``).
"""
from __future__ import annotations

from typing import Any

import attrs


@attrs.define
class SimulatorCost:
    """Running totals, training only (evaluation's simulator steps are not counted; its time is)."""

    steps: int = 0
    """Simulator forward steps (env rows): rollouts and probes."""
    vjps: int = 0
    """Simulator vector-Jacobian products (env rows × directions): backward passes and probes."""
    wall_time: float = 0.0
    """Seconds spent in training iterations, evaluation included."""

    def state_entries(self) -> dict[str, Any]:
        return {"cost": {"sim_steps": self.steps, "sim_vjps": self.vjps, "wall_time": self.wall_time}}

    def load_state_entries(self, state: dict[str, Any]) -> None:
        cost = state.get("cost", {})
        self.steps, self.vjps = cost.get("sim_steps", 0), cost.get("sim_vjps", 0)
        self.wall_time = cost.get("wall_time", 0.0)
