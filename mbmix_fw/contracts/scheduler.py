"""The ``Scheduler`` extension point: what each training iteration does, and scheduled hyper-parameters."""
from __future__ import annotations

import abc
from types import MappingProxyType
from typing import Any, Mapping

import attrs

from ..errors import UserError
from .component import MAX_STEPS, component_label

NO_METRICS: Mapping[str, float] = MappingProxyType({})
"""What :meth:`Scheduler.plan` sees before the first iteration: no metrics yet."""


@attrs.frozen
class Plan:
    """One iteration's phases, in the order the trainer runs them.

    1. A real rollout through the simulator always runs (it advances the env and feeds the buffer).
       Its policy loss enters with weight ``env_weight`` (β); at β = 0 it runs without a graph.
    2. ``model_branches`` start states are drawn from the replay buffer and rolled out through the
       world model; that loss enters with weight ``1 - env_weight``. Needs a world model.
    3. One policy step on ``β·L_env + (1-β)·L_model``.
    4. ``critic_iterations`` passes of critic regression on the TD(λ) targets of both rollouts.
    5. ``model_fit_steps`` minibatch steps of world-model fitting on the buffer.

    ``actor_lr_scale`` / ``critic_lr_scale`` multiply the recipe's learning rates this iteration, on top of
    ``optim.lr_schedule``, which the trainer applies whatever the scheduler (1: the schedule alone).
    ``jacobian_blend`` = w > 0 rolls the real window out with the simulator's values but backpropagates
    through ``w·∂model + (1−w)·∂simulator`` (:mod:`mbmix_fw.maths.jacobian_blend`); needs a world model.

    ``model_fit_per_transition`` = r > 0 adds ``ceil(r · n / batch_size)`` fit steps to ``model_fit_steps``,
    where ``n`` is the number of transitions this iteration added to the buffer: a fit budget in units of
    data, which keeps up with the data whatever the window length or env count.

    ``model_horizon`` sets the model branches' window length alone (``None``: the same as the real window);
    ``branch_recent`` > 0 draws branch start states from the newest ``branch_recent`` buffer transitions
    only (0: the whole buffer), where the model has just been measured and the policy now goes.

    ``horizon`` (steps, ``1 … MAX_STEPS``) sets this iteration's window length H for both the simulator
    window and the model branches; ``lam`` (in [0, 1]) this iteration's λ of an estimator that mixes
    windows (``mix``). ``None`` keeps the estimator's configured value. A scheduler declares what its
    plans may ask for (:attr:`Scheduler.horizon_range`, :attr:`Scheduler.plans_lam`); the build checks
    the declarations against the estimator, and the trainer checks every plan against the declarations
    and the estimator before the iteration runs (:func:`mbmix_fw.training.budget.check_plan`).
    """

    env_weight: float = 1.0
    model_branches: int = 0
    model_fit_steps: int = 0
    critic_iterations: int | None = None
    actor_lr_scale: float = 1.0
    critic_lr_scale: float = 1.0
    jacobian_blend: float = 0.0
    horizon: int | None = None
    lam: float | None = None
    model_horizon: int | None = None
    branch_recent: int = 0
    model_fit_per_transition: float = 0.0

    def __attrs_post_init__(self) -> None:
        if not 0.0 <= self.env_weight <= 1.0:
            raise ValueError(f"env_weight must lie in [0, 1], got {self.env_weight}")
        if not 0.0 <= self.jacobian_blend <= 1.0:
            raise ValueError(f"jacobian_blend must lie in [0, 1], got {self.jacobian_blend}")
        if self.horizon is not None and (isinstance(self.horizon, bool) or not isinstance(self.horizon, int)
                                         or not 1 <= self.horizon <= MAX_STEPS):
            raise ValueError(f"horizon must be an int in [1, {MAX_STEPS}] or None, got {self.horizon!r}")
        for name in ("model_horizon",):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 1 <= value <= MAX_STEPS):
                raise ValueError(f"{name} must be an int in [1, {MAX_STEPS}] or None, got {value!r}")
        if isinstance(self.branch_recent, bool) or not isinstance(self.branch_recent, int) or self.branch_recent < 0:
            raise ValueError(f"branch_recent must be an int >= 0, got {self.branch_recent!r}")
        if not 0.0 <= self.model_fit_per_transition <= 1e4:  # NaN fails this too
            raise ValueError(f"model_fit_per_transition must lie in [0, 1e4], got {self.model_fit_per_transition}")
        if self.lam is not None and not 0.0 <= self.lam <= 1.0:  # NaN fails this too
            raise ValueError(f"lam must lie in [0, 1] or be None, got {self.lam}")


class Scheduler(abc.ABC):
    """Decides each iteration's :class:`Plan` (``iteration`` counts from 0 to ``total - 1``).

    ``plan(k, total, metrics)`` is called exactly once per iteration, just before the update that takes
    the run from iteration k to k + 1, with ``metrics``: a read-only mapping of row k of ``metrics.csv``
    (the row the previous update wrote) as host floats (``loss/actor``, ``grad/actor_norm``,
    ``estimator/…``, ``model/…``, ``plan/horizon``, ``eval/return`` when evaluated…). It is empty at
    k = 0 (row 0 holds only the untrained policy's evaluation); after a resume it is the last
    checkpointed row, so a resumed run plans exactly what the uninterrupted one would have. Reading it
    costs no device synchronisation: the trainer reads the metrics once per iteration anyway.

    **Declarations.** What a plan may ask for is declared on the scheduler, so a recipe that pairs it
    with an estimator that cannot honour it is refused when the run is built, before anything is
    written: ``horizon_range = (H_min, H_max)`` for a scheduler that sets ``Plan.horizon`` (checked
    against the estimator's ``horizon_bounds`` and ``horizon_multiple``; it also sizes the memory check
    and the env-step budget check by H_max), ``plans_lam = True`` for one that sets ``Plan.lam``
    (refused with an estimator without λ). The build also makes one dry plan for iteration 0 on a copy
    of the scheduler. Every plan is then checked against the declarations, each iteration before it
    runs: a plan outside them is a bug in the scheduler, and stops the run with a one-line error naming
    it (the checkpoints written so far stay, so the run resumes once the scheduler is fixed).

    **State.** An adaptive scheduler keeps state between calls in ``state_dict()`` /
    ``load_state_dict(state)``: the trainer saves it in every checkpoint and restores it on resume, so
    the schedule continues exactly. Its values are tensors and plain Python values (``int``, ``float``,
    ``bool``, ``str``, ``None``, and lists, tuples and dicts of them): a checkpoint is read with
    ``torch.load(weights_only=True)``, so anything else (a numpy scalar) is refused when the checkpoint
    is written, naming the scheduler and the key. The defaults hold no state.
    """

    horizon_range: tuple[int, int] | None = None
    """The window lengths this scheduler's plans may ask for (inclusive); ``None``: it never sets one."""
    reads: frozenset[str] = frozenset()
    """Metrics its plans read from the previous row (names in :mod:`mbmix_fw.contracts.metrics`): the build
    refuses a run in which no component reports one of them (a plan would read a default forever). A
    scheduler whose reads depend on its settings makes this a property."""
    plans_lam: bool = False
    """True: its plans may set ``Plan.lam`` (the estimator must mix windows with a λ, like ``mix``)."""
    needs_contact: bool = False
    """True: its plans read ``contact/stiffness`` (the env's optional :meth:`~mbmix_fw.DiffEnv.contact_stiffness`
    signal, averaged over the previous window), so the trainer computes it, and refuses an env without it."""
    needs_gradient_agreement: bool = False
    """True: its plans read ``grad/half_cosine``, the cosine between the policy gradients of the two halves
    of the env batch (``mbmix_fw/training/agreement.py``: measured within the one backward of the update)."""

    @abc.abstractmethod
    def plan(self, iteration: int, total: int, metrics: Mapping[str, float] = NO_METRICS) -> Plan: ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of this scheduler (a stateless one keeps nothing)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. The default refuses a saved state it cannot restore (a scheduler
        that overrides ``state_dict`` but not this), rather than resume a different schedule silently."""
        if state:
            raise UserError(f"{component_label('scheduler', self)}: the checkpoint holds its state "
                            f"(keys {sorted(map(str, state))}) but {type(self).__name__} defines no "
                            f"load_state_dict to restore it")

