"""The ``WorldModel`` extension point: learned dynamics that can stand in for the simulator."""
from __future__ import annotations

import abc

import attrs
import torch




@attrs.frozen(eq=False)
class TransitionBatch:
    """Transitions for model fitting, all ``[B, ·]`` tensors on the training device, detached.

    ``probe_u`` ``[B, P, S]`` are random unit vectors on the output side; ``probe_s`` ``[B, P, S]`` and
    ``probe_a`` ``[B, P, A]`` are the simulator's vector-Jacobian products ``uᵀ∂s'/∂s`` and ``uᵀ∂s'/∂a``
    (its own adjoint). They are ``None`` when the model asked for no probes.
    """

    state: torch.Tensor
    action: torch.Tensor
    next_state: torch.Tensor
    probe_u: torch.Tensor | None = None
    probe_s: torch.Tensor | None = None
    probe_a: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.state.shape[0]


class WorldModel(torch.nn.Module, abc.ABC):
    """Learned dynamics with the env's ``step`` signature, so estimators can roll it out unchanged.

    ``probes`` tells the trainer how many Jacobian probes per transition to collect from the
    simulator (0: none, the model trains on states only); ``batch_size`` is the minibatch the trainer
    samples from the replay buffer for each ``fit`` call. Anything ``fit`` learns (weights, optimiser,
    normalisation statistics) must live in ``state_dict()`` so a resumed run continues exactly.
    """

    probes: int = 0
    probe_source: str = "random"
    """``"random"``: the trainer collects ``probes`` random simulator probes per transition. ``"adjoint"``:
    it stores the probes of the actor's own backward through the real window (one per transition, in the
    policy gradient's directions, free: mbmix_fw/maths/adjoint_tap.py); ``probes`` must then be 1."""
    batch_size: int = 256
    buffer_capacity: int = 100_000
    """Transitions the trainer's replay buffer keeps (``[world_model] buffer_capacity``)."""
    is_simulator = False
    """A rollout through it scores its predicted states with the env (:class:`~mbmix_fw.Dynamics`)."""
    reports: frozenset[str] = frozenset()
    """The metrics :meth:`evaluate` returns (names in :mod:`mbmix_fw.contracts.metrics`). A scheduler that
    reads one (``dyna.model_error_gate`` reads ``model/jacobian_error_a``) is refused at build when the
    world model does not declare it."""

    @abc.abstractmethod
    def step(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Predicted next states ``[N, S]``, differentiable w.r.t. ``state``, ``action`` and parameters."""

    @abc.abstractmethod
    def fit(self, batch: TransitionBatch) -> dict[str, float]:
        """One optimisation step on ``batch``; returns scalar metrics (``model/loss``…)."""

    def evaluate(self, batch: TransitionBatch) -> dict[str, float]:
        """Held-out error metrics (``model/state_error``, ``model/jacobian_error``…). Default: none."""
        return {}
