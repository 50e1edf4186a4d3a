"""The gradient-quality instrument: which gradient improves a saved policy most per simulator call?

Why: ``diagnose variance`` says how noisy and how biased each estimator is, but not what its gradient is
*worth*: a direction can be noisy and still improve the policy, or precise and point at the wrong
objective (a critic's, a model's). Scores of whole runs cannot tell (the random stream alone moves
the cloth's score by more than any effect seen). So at one saved policy θ this module draws ``K``
independent gradient samples from each estimator and measures, per estimator:

- ``pair_cosine``: the mean cosine between two of its samples (signal-to-noise: 1 for a noiseless
  estimator, about 0 when noise dominates);
- ``ref_cosine``: the cosine of its sample mean to a low-variance reference ``g_ref`` (``ref_cosine_each``:
  the mean cosine of one sample, what one update sees). ``g_ref`` is the env's exact gradient
  (``env.exact_policy_gradient``: LQR, the tabular MDP; only without observation normalisation) when it has
  one, else the mean of ``reference_samples`` SHAC samples at the recipe's window ``H`` drawn from their own
  seeds — the critic-bootstrapped objective the trainer itself optimises, the lowest-variance member of the
  family, so the cosines measure noise and objective mismatch rather than the reference's own noise (BPTT
  through whole episodes would be unbiased for the discounted return but its variance explodes on stiff
  simulators; its row shows how far it is from the reference);
- ``delta_j``: the improvement ``ΔJ = J(θ + η·ĝ/‖ĝ‖) − J(θ)`` of one normalised step along a sample ``ĝ``,
  averaged over the samples with its standard error. ``J`` is the run's own evaluation: the mean
  undiscounted return of the :class:`~mbmix_fw.training.evaluation.Evaluator`'s deterministic episodes from
  its fixed initial states, so two ``J`` differ only by the policy (``J`` has no noise of its own: any
  ``η`` resolves a direction's worth). ``η`` is an L2 distance in parameter space, 0.02 by default: on the
  cloth (iteration-20 checkpoint, 64-unit policy) the window estimators' ΔJ still grows with η up to about
  0.03 and turns over beyond 0.1, where a single sample's step overshoots (one Adam step with every
  coordinate moving by ``actor_lr`` would be ``actor_lr·√P`` ≈ 0.24 there; the linear schedule has decayed
  it by then). θ is copied back after every evaluation and checked bit for bit at the end;
- ``sim_steps``, ``sim_vjps`` per sample: simulator forward steps and vector-Jacobian products (env rows ×
  steps; env rows whose simulator output received a gradient), *counted*, by stepping the simulator through a
  counting wrapper (:class:`CountingSimulator`) — the conventions of ``sim/steps`` and ``sim/vjps``
  (mbmix_fw/training/cost.py); evaluation is not counted, as in training. ``delta_j_per_1k_calls`` is
  ``ΔJ / ((steps + vjps) / 1000)``; ``None`` for an estimator that calls no simulator (a model window).

Start states: every sample starts ``num_envs`` fresh episodes (``env.reset``, ``t = 0``) from a generator
seeded by the sample's index, and sample ``k`` of every estimator uses the same seed (common random
numbers): the same real start states and the same action noise, so differences between estimators are not
differences in states. Fresh episodes, not the run's cursor, because the cursor is one batch of states (K
independent samples need K batches) and because every estimator then estimates the gradient of the same
quantity, the return from the reset distribution. Model branches start, as in training, from states of the
run's replay buffer (drawn with the sample's generator).

The estimators (``kind``, what ``--estimators`` selects):

- ``shac``: the simulator's SHAC window at ``H·f`` for each ``f`` in ``horizon_fractions`` (``H``: the
  recipe estimator's window), with the run's target critic;
- ``mix``: MIX at the recipe's λ and ``H_max`` (the recipe's own estimator when it is ``mix``);
- ``bptt``: through whole episodes, when ``episode_length <= bptt_max_steps``;
- with a world model: ``model_window`` (the recipe's estimator through the world model from the same real
  starts, window ``H``: no simulator call), ``model_branches`` (what ``Trainer._iterate`` steps on:
  ``β·L_real + (1−β)·L_branches``, the real window through the simulator — Jacobian-blended when the plan
  blends — and the plan's branches from buffer states through the model at the plan's model horizon; β is the
  plan's at the checkpoint, or the scheduler's ``env_weight`` when that plan leaves the model out, warm-up or
  gate, so the mixture is still measured: ``beta_note`` says which) and ``jacobian_blend`` (the real window
  through :class:`~mbmix_fw.maths.jacobian_blend.JacobianBlend` with the plan's ``w``, or ``blend`` when the
  plan has none).

Gradients are ``g = −T·∇θ loss`` (``T``: the window), the per-env objective's scale as in
:mod:`~mbmix_fw.diagnostics.gradient_statistics`; cosines and ΔJ do not depend on it.
"""
from __future__ import annotations

import math
import time
from types import MappingProxyType
from typing import Any, Callable, Sequence

import attrs
import torch

from ..contracts.rollout_types import Cursor
from ..contracts.scheduler import Plan
from ..errors import UserError
from ..maths.jacobian_blend import JacobianBlend
from .gradient_statistics import exact_gradient

KINDS = ("shac", "mix", "bptt", "model_window", "model_branches", "jacobian_blend")
"""The estimator kinds the instrument knows, in the order of its table."""
REFERENCE_SEED_OFFSET = 7_919
"""The reference's samples are drawn from seeds this far from the estimators' (independent of them)."""


class CountingSimulator:
    """A :class:`~mbmix_fw.Dynamics` that steps ``env`` and counts what the simulator did (``is_simulator``
    False: the rollout calls its ``step``, never the env's fused ``transition``, so every step is counted).

    ``steps``: env rows stepped forward. ``vjps``: env rows whose next state received a gradient in a
    backward pass (a hook on the simulator's output: counted when the VJP is actually asked for, so a
    Jacobian blend at ``w = 1`` that multiplies the simulator's branch by 0 still counts, as it still costs).
    """

    is_simulator = False

    def __init__(self, env):
        self.env = env
        self.steps = 0
        self.vjps = 0

    def step(self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None):
        out = self.env.step(state, action, generator)
        rows = int(state.shape[0])
        self.steps += rows
        if out.requires_grad:
            out.register_hook(lambda grad, rows=rows: self._backward(rows))
        return out

    def _backward(self, rows: int) -> None:
        self.vjps += rows


@attrs.frozen
class QualitySettings:
    """What the instrument measures (see the module docstring); ``None`` fields take the run's values."""

    samples: int = 8
    eta: float = 0.02
    """Step length of ``θ + η·ĝ/‖ĝ‖`` (an L2 distance in parameter space; module docstring)."""
    horizon_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    bptt_max_steps: int = 64
    reference_samples: int | None = None
    """SHAC samples averaged into the reference when the env has no exact gradient; None: ``2·samples``."""
    blend: float = 0.5
    """The ``jacobian_blend`` row's model weight when the plan at the checkpoint blends nothing."""
    seed: int = 0
    eval_episodes: int | None = None
    """Evaluation episodes of ``J``; None: the run's ``run.eval_envs``."""
    estimators: tuple[str, ...] | None = None
    """Kinds to measure (:data:`KINDS`); None: every kind the run supports."""

    def __attrs_post_init__(self) -> None:
        if self.samples < 2:
            raise UserError(f"need at least 2 gradient samples for a cosine between samples, got {self.samples}")
        unknown = [k for k in self.estimators or () if k not in KINDS]
        if unknown:
            raise UserError(f"unknown estimator(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")


@attrs.frozen(eq=False)
class Candidate:
    """One estimator as the instrument draws it: ``loss(starts, generator, simulator) -> (loss, T)``."""

    label: str
    kind: str
    horizon: int
    loss: Callable[[torch.Tensor, torch.Generator, CountingSimulator], tuple[torch.Tensor, int]]
    note: str = ""


@attrs.frozen(eq=False)
class Sample:
    gradient: torch.Tensor  # float64 [P]
    steps: int
    vjps: int


def _flat(grads, params) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if g is None else g).detach().reshape(-1).to(torch.float64).cpu()
                      for g, p in zip(grads, params)])


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float | None:
    na, nb = float(a.norm()), float(b.norm())
    return None if na == 0 or nb == 0 else float(a @ b) / (na * nb)


def mean_pairwise_cosine(samples: torch.Tensor) -> float | None:
    """Mean of ``cos(g_i, g_j)`` over the pairs ``i < j`` of ``[K, P]`` samples (``None`` if one is 0)."""
    norms = samples.norm(dim=1)
    if bool((norms == 0).any()):
        return None
    unit = samples / norms[:, None]
    k = samples.shape[0]
    return float((unit.sum(0).pow(2).sum() - k) / (k * (k - 1)))


def _plan_at(trainer) -> Plan:
    """The plan the scheduler gives the trainer's next iteration, from the checkpoint's last metrics row."""
    metrics = MappingProxyType(dict(trainer.log.last_row(trainer.iteration)))
    total = max(trainer.planned_total(), trainer.iteration + 1)
    return trainer.scheduler.plan(trainer.iteration, total, metrics)


class GradientQuality:
    """The instrument at ``trainer``'s current policy (build the trainer, load a checkpoint, then this).

    ``registry`` builds the SHAC, MIX and BPTT estimators of the rows. Nothing of the trainer is changed:
    gradients are taken with ``torch.autograd.grad`` (no ``.grad`` is written) and θ is restored after
    every ΔJ evaluation.
    """

    def __init__(self, trainer, registry, settings: QualitySettings = QualitySettings()):
        from ..contracts.context import BuildContext

        self.trainer, self.settings = trainer, settings
        self.env, self.device = trainer.env, trainer.device
        self.policy = trainer.networks.policy
        self.params = list(self.policy.parameters())
        self.ctx = BuildContext(device=self.device, seed=trainer.run.seed).with_env(self.env)
        self.registry = registry
        self.recipe_horizon = int(trainer.estimator.horizon(self.env))
        self.eta = settings.eta
        self.plan = _plan_at(trainer)
        self.candidates = self._candidates()

    # ------------------------------------------------------------------ the estimators
    def _build(self, kind: str, **config):
        entry = self.registry.estimator.get(kind)
        return self.registry.estimator.build(entry.config(**config), self.ctx)

    def _input(self, dynamics, start: Cursor, generator, horizon=None, lam=None):
        from ..contracts.estimator import EstimatorInput

        t = self.trainer
        return EstimatorInput(policy_fn=t.actor_update.policy_fn, value_fn=t.critic_update.target_value,
                              env=self.env, dynamics=dynamics, start=start, generator=generator,
                              horizon=horizon, lam=lam)

    def _cursor(self, starts: torch.Tensor) -> Cursor:
        return Cursor(starts, torch.zeros(starts.shape[0], dtype=torch.long, device=self.device))

    def _window(self, estimator, horizon: int, dynamics: Callable[[CountingSimulator], Any]):
        def loss(starts, generator, simulator):
            est = estimator.estimate(self._input(dynamics(simulator), self._cursor(starts), generator, horizon))
            return est.loss, horizon
        return loss

    def _candidates(self) -> list[Candidate]:
        t, env, h = self.trainer, self.env, self.recipe_horizon
        wanted = set(self.settings.estimators or KINDS)
        gamma = t.estimator.gamma
        out: list[Candidate] = []
        sim = lambda s: s  # noqa: E731 - the counting simulator itself
        if "shac" in wanted:
            for hh in sorted({max(1, round(h * f)) for f in self.settings.horizon_fractions}):
                out.append(Candidate(f"shac H={hh}", "shac", hh,
                                     self._window(self._build("shac", horizon=hh, gamma=gamma), hh, sim)))
        recipe_cfg = getattr(t.estimator, "config", None)
        is_mix = getattr(recipe_cfg, "kind", None) == "mix"
        if "mix" in wanted:
            mix = t.estimator if is_mix else self._build("mix", horizon=h, gamma=gamma)
            out.append(Candidate(f"mix λ={mix.lam:g} H={h}", "mix", h, self._window(mix, h, sim)))
        if "bptt" in wanted and env.episode_length <= self.settings.bptt_max_steps:
            # truncated at the episode length from our t = 0 starts: BPTT through whole episodes, from the
            # same start states as every other row (the full-episode mode would draw its own resets)
            bptt = self._build("bptt", gamma=gamma)
            out.append(Candidate(f"bptt T={env.episode_length}", "bptt", env.episode_length,
                                 self._window(bptt, env.episode_length, sim)))
        model = t.world_model
        if model is not None:
            if "model_window" in wanted:
                out.append(Candidate(f"model window H={h}", "model_window", h,
                                     self._window(t.estimator, h, lambda s: model)))
            if "model_branches" in wanted:
                out.append(self._mixed_candidate())
            if "jacobian_blend" in wanted:
                w = self.plan.jacobian_blend or self.settings.blend
                source = "the plan's" if self.plan.jacobian_blend else "the setting 'blend' (the plan blends nothing)"
                out.append(Candidate(f"blend w={w:g} H={h}", "jacobian_blend", h,
                                     self._window(t.estimator, h, lambda s: JacobianBlend(s, model, w)),
                                     note=f"w from {source}"))
        if not out:
            raise UserError(f"none of the estimators {', '.join(sorted(wanted))} applies to this run (model-only "
                            f"kinds need a world model; bptt needs episode_length <= {self.settings.bptt_max_steps})")
        return out

    def _mixed_candidate(self) -> Candidate:
        """``β·L_real + (1−β)·L_branches`` as ``Trainer._iterate`` forms it (actor_update.step)."""
        t, plan, h = self.trainer, self.plan, self.recipe_horizon
        model, learner = t.world_model, t.model_update
        beta, note = plan.env_weight, "β from the plan at the checkpoint"
        branches, branch_h = plan.model_branches, plan.model_horizon or plan.horizon or h
        if beta >= 1.0 or not branches:  # warm-up or a closed gate: measure the mixture the scheduler would use
            config = getattr(t.scheduler, "config", None)
            beta = float(getattr(config, "env_weight", 0.5))
            branches = int(getattr(config, "model_branches", 0) or self.env.num_envs)
            branch_h = getattr(config, "model_horizon", None) or h
            note = (f"the plan at the checkpoint leaves the model out (β = {plan.env_weight:g}: warm-up or gate); "
                    f"the scheduler's env_weight {beta:g} used")
        recent = plan.branch_recent
        w = plan.jacobian_blend

        def loss(starts, generator, simulator):
            dynamics = JacobianBlend(simulator, model, w) if w > 0 else simulator
            real = t.estimator.estimate(self._input(dynamics, self._cursor(starts), generator, h))
            total = beta * real.loss if beta > 0 else 0.0
            if beta < 1 and len(learner.buffer) > 0:
                chosen = (learner.buffer.sample_recent_states(branches, recent, generator) if recent
                          else learner.buffer.sample_states(branches, generator))
                branch = t.estimator.estimate(self._input(model, Cursor(chosen, None), generator, branch_h))
                total = total + (1.0 - beta) * branch.loss
            return total, h

        if len(learner.buffer) == 0:
            note += "; the buffer is empty: no branch ran"
        return Candidate(f"model branches β={beta:.3g} H={h}+{branch_h}", "model_branches", h, loss,
                         note=f"{note}; {branches} branches of {branch_h} steps")

    # ------------------------------------------------------------------ samples and ΔJ
    def sample(self, candidate: Candidate, seed: int) -> Sample:
        """One gradient sample of ``candidate`` from fresh episodes drawn with ``seed``, and its counted cost."""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        starts = self.env.reset(self.env.num_envs, generator)
        simulator = CountingSimulator(self.env)
        loss, horizon = candidate.loss(starts, generator, simulator)
        if not (isinstance(loss, torch.Tensor) and loss.requires_grad):
            return Sample(torch.zeros(sum(p.numel() for p in self.params), dtype=torch.float64),
                          simulator.steps, simulator.vjps)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        return Sample(-float(horizon) * _flat(grads, self.params), simulator.steps, simulator.vjps)

    def evaluate(self) -> float:
        """``J(θ)``: the mean return of the Evaluator's deterministic episodes (its fixed initial states)."""
        return float(self.trainer.evaluator.returns(self.settings.eval_episodes).mean())

    def step_along(self, direction: torch.Tensor, eta: float | None = None) -> None:
        """``θ ← θ + η·d/‖d‖`` in place (nothing for ``d = 0``)."""
        norm = float(direction.norm())
        if norm == 0:
            return
        scaled = direction * ((self.eta if eta is None else eta) / norm)
        offset = 0
        with torch.no_grad():
            for p in self.params:
                n = p.numel()
                p.add_(scaled[offset:offset + n].reshape(p.shape).to(device=p.device, dtype=p.dtype))
                offset += n

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def restore(self, saved: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, s in zip(self.params, saved):
                p.copy_(s)

    def improvement(self, direction: torch.Tensor, baseline: float) -> float:
        """``J(θ + η·d/‖d‖) − baseline``, θ restored exactly afterwards."""
        saved = self.snapshot()
        try:
            self.step_along(direction)
            return self.evaluate() - baseline
        finally:
            self.restore(saved)

    def reference(self) -> tuple[torch.Tensor, str]:
        """``(g_ref, note)``: the exact gradient, or the mean of SHAC samples at the recipe's window."""
        if self.trainer.networks.obs_norm is None:
            exact, _ = exact_gradient(self.env, self.policy, self.trainer.estimator.gamma)
            if exact is not None:
                return exact, "reference: the exact gradient (env.exact_policy_gradient)"
        k = self.settings.reference_samples or 2 * self.settings.samples
        shac = self._build("shac", horizon=self.recipe_horizon, gamma=self.trainer.estimator.gamma)
        ref = Candidate("reference", "shac", self.recipe_horizon,
                        self._window(shac, self.recipe_horizon, lambda s: s))
        base = self.settings.seed * 1_000_003 + REFERENCE_SEED_OFFSET
        total = sum(self.sample(ref, base + i).gradient for i in range(k))
        return total / k, f"reference: the mean of {k} SHAC samples at H={self.recipe_horizon} (own seeds)"

    def measure(self, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """``{"settings", "rows", "reference_note", "j0", "seconds"}``: one row per candidate (module docstring)."""
        say = progress or (lambda _: None)
        started = time.perf_counter()
        before = self.snapshot()
        k = self.settings.samples
        j0 = self.evaluate()
        say(f"J(θ) = {j0:.4g}; reference gradient")
        ref, ref_note = self.reference()
        rows = []
        for cand in self.candidates:
            say(f"{cand.label}: {k} samples")
            drawn = [self.sample(cand, self.settings.seed * 1_000_003 + i) for i in range(k)]
            grads = torch.stack([d.gradient for d in drawn])
            gains = torch.tensor([self.improvement(g, j0) for g in grads], dtype=torch.float64)
            each = [_cosine(g, ref) for g in grads]
            steps = sum(d.steps for d in drawn) / k
            vjps = sum(d.vjps for d in drawn) / k
            calls = steps + vjps
            mean_gain = float(gains.mean())
            rows.append({
                "label": cand.label, "kind": cand.kind, "horizon": cand.horizon, "samples": k,
                "sim_steps": steps, "sim_vjps": vjps, "mean_grad_norm": float(grads.mean(0).norm()),
                "pair_cosine": mean_pairwise_cosine(grads), "ref_cosine": _cosine(grads.mean(0), ref),
                "ref_cosine_each": None if None in each else sum(each) / k,
                "delta_j": mean_gain, "delta_j_se": float(gains.std(unbiased=True) / math.sqrt(k)),
                "delta_j_per_1k_calls": mean_gain / (calls / 1000.0) if calls > 0 else None,
                "note": cand.note,
            })
        after = self.snapshot()
        if not all(torch.equal(a, b) for a, b in zip(before, after)):  # a guard: restore() must be exact
            raise RuntimeError("the policy's parameters changed during the measurement")
        settings = {**attrs.asdict(self.settings), "eta": self.eta, "recipe_horizon": self.recipe_horizon,
                    "num_envs": self.env.num_envs, "episode_length": self.env.episode_length,
                    "iteration": self.trainer.iteration,
                    "eval_episodes": self.settings.eval_episodes or self.trainer.run.eval_envs}
        return {"settings": settings, "j0": j0, "reference_note": ref_note, "rows": rows,
                "seconds": time.perf_counter() - started}
