"""Core (non-plugin) recipe tables: ``[run]``, ``[policy]``, ``[critic]``, ``[optim]``."""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from .component import MAX_ITERATIONS, Hidden, Iterations, NumEnvs, StrictTable


class _Settings(StrictTable):
    """Strict like every recipe table (see :mod:`mbmix_fw.contracts.component`)."""


class RunSettings(_Settings):
    seed: int = Field(0, ge=0, lt=2**63)
    """Seeds torch, numpy, python's random and the run's generator."""
    iterations: int = Field(100, ge=1, le=MAX_ITERATIONS)
    """Policy updates (one estimator window each). With an ``env_steps`` budget, the most the run may take."""
    env_steps: Iterations = 0
    """Env-step budget (0: off, ``iterations`` decides). When set, the run stops after the iteration in which
    ``env/steps`` (env rows stepped in training windows, all envs counted) reaches it, or at ``iterations``
    if that comes first, so runs whose window length changes (an adaptive-horizon scheduler such as
    ``ahac`` or ``agree``) compare with fixed-H runs at equal env steps. The last window is cut to the budget
    where the estimator allows: to the remaining steps rounded up to a multiple of its shortest window
    (``mix``: its interval), so a run overshoots by less than that. Schedulers then see as ``total`` the
    projected iteration count (iterations so far plus the remaining budget over the mean env steps per
    iteration so far; at iteration 0 the estimator's configured window), so a linear learning-rate decay
    follows the share of the budget used. Under ``torchrun`` each of K ranks takes ``env_steps / K``."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` picks cuda when available."""
    out: str = "runs/{name}"
    """Run folder; ``{name}`` is the recipe file's stem (no other placeholder). The CLI's ``--out`` wins.
    Never empty, the current directory, one of its parents, ``/`` or the home folder: a run writes
    several files and folders into its run folder."""
    checkpoint_every: int = Field(50, ge=1, le=MAX_ITERATIONS)
    """Iterations between checkpoints; one is also written at the end."""
    eval_every: Iterations = 0
    """Iterations between deterministic evaluations (0: only before and after training)."""
    eval_every_env_steps: Iterations = 0
    """Also evaluate after the iteration in which ``env/steps`` crosses a multiple of this (0: off), so
    evaluations of runs with different window lengths fall at the same env steps (within one window)."""
    eval_envs: NumEnvs = 16
    """Episodes run in parallel for each evaluation (fixed, seeded initial states; deterministic policy).
    ``eval/return`` is their mean, so its standard error as a measure of the policy is ``σ/√eval_envs`` with
    ``σ`` the spread of single-episode returns over initial states (``benchmarks/eval_episodes.py``
    measures it: pendulum σ ≈ 130 untrained, 250 half-trained, on returns near −1100; cloth σ ≈ 0.8
    untrained and 0.6 trained, on returns near 26). 16 puts the 95 % half-width at σ/2 (pendulum ±60–120,
    cloth ±0.3), below the spread between seeds, which is why methods are compared over seeds
    (``mbmix-fw report --group``); the cloth recipes use 32 (±0.2), which costs about 1.15× an 8-cloth
    evaluation, since the episodes run in one batch."""
    max_skipped_iterations: int = Field(20, ge=1, le=MAX_ITERATIONS)
    """Stop with an error (exit 1, naming what went non-finite first) after this many consecutive
    iterations in which every update (actor, critic, world model) was skipped as non-finite."""
    threads: int | None = Field(None, ge=1, le=1024)
    """torch's intra-op threads for the run (``torch.set_num_threads``). Scores depend on the thread count:
    a multi-threaded matrix product or reduction sums in another order, and a learning curve amplifies the
    last-bit differences (seed 0 of ``cloth_mix``: 28.5 with one thread, 30.4 with two). Set it (e.g. 1)
    to make a recipe's numbers the same on every machine with the same software; ``None`` keeps torch's
    default (the machine's cores, or ``OMP_NUM_THREADS``). The count a run used is recorded in its
    ``environment.json`` either way. See README, "Reproducibility"."""
    model_error_probes: Literal["auto", "window"] = "auto"
    """Where a run with a world model gets the probes of its held-out Jacobian errors
    (``model/jacobian_error*``, what a Dyna gate reads), measured each iteration on the new window before the
    model trains on it. ``auto``: on small envs (state + action dims at most 64) the simulator's full
    Jacobians of 256 of the window's transitions — exact, at a cost: 256 extra simulator steps and 256 ×
    state-dim VJPs per iteration, counted in ``sim/steps`` and ``sim/vjps`` (as many steps as a 16-env,
    16-step window); on larger envs the window's own probes. ``window``: always the window's own probes (the
    actor backward's adjoint probes, or the buffer's random ones), so the model's bookkeeping costs no
    simulator call — what a study that gives every method the same simulator calls needs. A consistent
    ratio estimate either way (:meth:`mbmix_fw.WorldModel.evaluate`); with no probes at all (an MSE-only
    model fed nothing) only ``model/state_error`` is reported."""
    dtype: Literal["auto", "float32", "float64"] = "auto"
    """Floating-point type of the env, nets, replay buffer and world model. ``auto``: the env's (the
    dtype of its ``reset`` states; the built-in envs build in float32); ``float64`` builds the env in it."""

    @field_validator("out")
    @classmethod
    def _out_names_a_folder(cls, out: str) -> str:
        if not out.strip():
            raise ValueError("empty; it would write the run into the current directory: give a folder, "
                             "e.g. out = \"runs/{name}\"")
        unknown = sorted(set(re.findall(r"{[^{}]*}", out)) - {"{name}"})
        if unknown:
            raise ValueError(f"unknown placeholder {', '.join(unknown)}; only {{name}} (the recipe file's stem) "
                             f"is replaced")
        return out


Activation = Literal["elu", "relu", "tanh", "silu"]
AdamDecay = Annotated[float, Field(ge=0.0, lt=1.0)]
"""One of Adam's moment decay rates (β₁, β₂ in Adam's paper; β alone means ``env_weight`` here)."""


class PolicySettings(_Settings):
    hidden: Hidden = Field(default_factory=lambda: [64, 64])
    """Hidden layer widths of the tanh-Gaussian MLP (``[]``: a linear-Gaussian policy)."""
    activation: Activation = "elu"
    """Hidden-layer activation of the policy MLP."""
    layer_norm: bool = True
    """LayerNorm after each hidden layer of the policy (SHAC: on)."""
    init_log_std: float = Field(-1.0, ge=-20.0, le=5.0)
    """Initial state-independent log standard deviation (SHAC: -1). Bounded to [-20, 5]: beyond, the
    standard deviation underflows or the sampled actions are noise of size e⁵ ≈ 150."""
    squash: bool = True
    """tanh-squash actions into (-1, 1). Off for the linear-Gaussian policies of the study envs."""
    normalize_obs: bool = True
    """Running observation normalisation, frozen per window."""


class CriticSettings(_Settings):
    hidden: Hidden = Field(default_factory=lambda: [64, 64])
    """Hidden layer widths of the critic MLP."""
    activation: Activation = "elu"
    """Hidden-layer activation of the critic MLP."""
    layer_norm: bool = True
    """LayerNorm after each hidden layer of the critic (SHAC: on)."""
    td_lambda: float = Field(0.95, ge=0.0, le=1.0)
    """λ of the critic's TD(λ) targets; ``lam`` is the mix estimator's λ, always. (Was ``critic.lam``,
    still read with a warning.)"""
    tau: float = Field(0.8, ge=0.0, le=1.0)
    """Polyak weight of the online critic, the usual τ: ``target ← (1-τ)·target + τ·critic`` after each
    iteration. DiffRL's SHAC writes the same update with ``target_critic_alpha = 0.2 = 1-τ`` on the old
    target, hence 0.8. (Replaces ``target_tau``, which weighted the old target.)"""
    iterations: int = Field(16, ge=0, le=10_000)
    """Passes of critic regression per iteration (a scheduler may override); at most 10 000."""
    minibatches: NumEnvs = 4
    """Minibatches each critic pass splits the iteration's transitions into (one Adam step each; more
    than ``num_envs × horizon`` gives no more)."""
    model_branch_steps: int = Field(0, ge=0, le=MAX_ITERATIONS)
    """Steps of each world-model branch whose TD(λ) targets the critic also regresses on (the first
    ``k``, bootstrapped at the cut). 0 (default): the critic learns from real windows only, so it cannot
    learn the model's mistakes — measured on the cloth (``benchmarks/RESULTS.md``), two thirds of its samples came from
    16-step model branches whose reward was off by 0.37–0.49 per step at their ends (true 0.48–0.60),
    and training it on real windows alone lifted cloth_mix from 18.2 to 24.7 (5 seeds)."""


LrSchedule = Literal["constant", "linear"]


class OptimSettings(_Settings):
    actor_lr: float = Field(2e-3, gt=0)
    """Adam learning rate of the policy (scaled by ``lr_schedule``)."""
    critic_lr: float = Field(2e-3, gt=0)
    """Adam learning rate of the critic (scaled by ``lr_schedule``)."""
    lr_schedule: LrSchedule = "linear"
    """Learning-rate schedule of actor and critic, applied by the training loop whatever the scheduler:
    ``linear`` decays both rates to 0 over the run (``run.iterations``, or the projected total under an
    ``run.env_steps`` budget; DiffRL's SHAC decays linearly too, but to an absolute 1e-5 at its last epoch),
    ``constant`` keeps ``actor_lr`` and ``critic_lr``. A scheduler's ``Plan.actor_lr_scale`` and
    ``Plan.critic_lr_scale`` multiply on top. (Was ``scheduler.lr_schedule``, still read with a warning.)"""
    betas: tuple[AdamDecay, AdamDecay] = (0.7, 0.95)
    """Adam's β1, β2 (SHAC: 0.7, 0.95)."""
    grad_clip: float = Field(1.0, gt=0)
    """Gradient-norm clipping for actor and critic."""

    def lr_scale(self, iteration: int, total: int) -> float:
        """The factor ``lr_schedule`` puts on both learning rates at ``iteration`` (from 0) of ``total``."""
        return 1.0 - iteration / total if self.lr_schedule == "linear" else 1.0
