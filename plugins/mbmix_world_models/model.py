"""The Sobolev world model: an MLP ensemble trained to match next states *and* simulator Jacobians.

Our reconstruction of MB-MIX's model loss ``J_M(φ)`` (method.md §1.3(d); the paper's exact form is
not known), following Czarnecki et al. 2017 with random or adjoint projections. The loss itself — a
state term in units of the typical one-step change plus relative state- and action-Jacobian errors — is
:func:`mbmix_world_models.loss.sobolev_loss`, shared with the other world models of this plugin; its
docstring says what balances what.

Coordinates. The network ``g`` maps normalised inputs to the normalised state change:

- ``s_n = (s − μ_s) / σ_s``; actions are used as they are (the env contract keeps them in [-1, 1]);
- ``Δ = s' − s``, ``Δ_n = (Δ − μ_Δ) / σ_Δ``; prediction ``ŝ' = s + μ_Δ + σ_Δ ⊙ g(s_n, a)``.

The loss is taken in raw coordinates through this map (autograd differentiates the normalisation), so
probes and their targets never depend on the model's moving statistics.

Cost. The model side of each probe is a VJP with ``create_graph=True`` (double backward), so the
update cost grows with the probes used per step. ``probe_mixing=True`` (default) uses *one* random
Gaussian combination of a transition's stored probes per step when it has several (unbiased for the
per-probe mean at the cost of one probe); ``probe_mixing=False`` differentiates every stored probe.
``jacobian_fraction < 1`` applies the Jacobian term to that fraction of each minibatch only (the state
term always sees every row): cheaper, noisier. Measured on the 2-core CPU sandbox
(``benchmarks/sobolev_cost.py``, ``sobolev_accuracy.py``) with the previous network-coordinate loss:
the default update costs 2.1-2.35x a plain-MSE update; ``jacobian_fraction=0.25`` 1.75x.

With one cotangent per row (the adjoint probe, or probe mixing: the defaults) the SiLU network's forward, its
input VJP and their parameter gradient are one hand-differentiated pass (:mod:`mbmix_world_models.input_vjp`):
the same loss and gradient as ``autograd.grad(create_graph=True)`` (tested to float64 round-off), without
autograd's second-order graph, about 15 % cheaper per update (``benchmarks/RESULTS.md``). Several probes per
step unmixed, or ELU, go through autograd (``torch.func.vjp`` there gives bit-identical gradients at the same
cost, measured 18.7 vs 17.9 ms per step).
"""
from __future__ import annotations

import copy
import math

import attrs
import torch
from torch import nn
from torch.nn import functional as F

import mbmix_fw as mb

from .evaluation import held_out_errors
from .fit_step import adamw
from .input_vjp import forward_with_input_vjp

from .loss import sobolev_loss

_ACTIVATIONS = {"silu": F.silu, "elu": F.elu}


class RunningMoments(mb.RunningMoments):
    """Running mean and variance of every sample ever passed to :meth:`update` (float64 buffers).

    Updated from each fit minibatch, so the statistics converge to those of the replay data and
    change by ``O(1/steps)`` late in training; they are buffers, hence in ``state_dict``. ``std`` is
    floored at ``min_std`` so a dimension that never changes cannot divide by zero.
    """

    def __init__(self, dim: int, min_std: float = 1e-6):
        super().__init__(dim)
        self.min_std = min_std

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(torch.float64)
        mean = x.mean(0)
        deviation = x - mean  # two passes by hand: ``x.var(0)`` reduces across rows 8x slower on a CPU
        self.fold(mean, (deviation * deviation).mean(0), x.shape[0])

    def std(self, dtype: torch.dtype) -> torch.Tensor:
        return self.var.sqrt().clamp_min(self.min_std).to(dtype)


class EnsembleMLP(nn.Module):
    """``members`` independent MLPs evaluated together: ``x [M, N, in] -> [M, N, out]``.

    One batched matmul per layer instead of a Python loop over members. Hidden layers: Linear →
    LayerNorm (per member affine) → activation. Initialisation is ``nn.Linear``'s
    (``U(±1/√fan_in)``), drawn from the given generator so a seed fixes the model.
    """

    def __init__(self, members: int, sizes: list[int], activation: str = "silu", layer_norm: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.activation, self.layer_norm = _ACTIVATIONS[activation], layer_norm
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        self.norm_scales, self.norm_shifts = nn.ParameterList(), nn.ParameterList()
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter((torch.rand(members, fan_in, fan_out, generator=generator) * 2 - 1) * bound))
            self.biases.append(nn.Parameter((torch.rand(members, 1, fan_out, generator=generator) * 2 - 1) * bound))
            if layer_norm and i < len(sizes) - 2:
                self.norm_scales.append(nn.Parameter(torch.ones(members, 1, fan_out)))
                self.norm_shifts.append(nn.Parameter(torch.zeros(members, 1, fan_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias, x, weight)
            if i < last:
                if self.layer_norm:
                    x = F.layer_norm(x, x.shape[-1:]) * self.norm_scales[i] + self.norm_shifts[i]
                x = self.activation(x)
        return x


class SobolevMLP(mb.WorldModel):
    """Learned dynamics ``ŝ' = s + μ_Δ + σ_Δ ⊙ mean_m g_m(s_n, a)`` trained with the Sobolev loss.

    ``alpha_s = alpha_a = 0`` is the plain-MSE model (then ``probes`` is 0 and the trainer collects
    none): the ablation is a setting. ``smoothness > 0`` penalises the model's own Jacobian along the
    probes (a model smoother than the simulator, PWM's idea), with or without α: a third setting on the
    same data. ``members > 1`` is an ensemble whose members share every
    minibatch and differ by initialisation; ``step`` returns the *mean* of the members — deterministic
    and smooth, so policy gradients through the model do not jump between members from call to call
    and the generator is not consumed (the random-member alternative would make the rollout's noise
    stream depend on whether a model is used).

    Checkpointing: the Adam(W) optimiser and the probe-mixing generator live inside the module and are
    saved by ``get_extra_state`` (part of ``state_dict()`` under ``_extra_state``), so
    ``load_state_dict(state_dict())`` restores the model *and* makes the next ``fit`` identical. The
    state dict holds tensors, numbers, tuples and dicts only (``torch.load(weights_only=True)``).
    """

    reports = mb.HELD_OUT_MODEL_ERRORS  # evaluation.held_out_errors

    def __init__(self, state_dim: int, action_dim: int, *, hidden=(256, 256), activation: str = "silu",
                 layer_norm: bool = True, members: int = 1, alpha_s: float = 1.0, alpha_a: float = 1.0,
                 probes: int = 4, probe_source: str = "adjoint", probe_mixing: bool = True,
                 jacobian_fraction: float = 1.0, smoothness: float = 0.0,
                 lr: float = 1e-3, weight_decay: float = 0.0,
                 batch_size: int = 256, buffer_capacity: int = 100_000, clip_probe_norm: float | None = None,
                 seed: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__()
        jacobian_terms = alpha_s > 0 or alpha_a > 0 or smoothness > 0
        if jacobian_terms and probes < 1:
            raise ValueError("alpha_s/alpha_a/smoothness > 0 need probes >= 1 (set probes, or all three to 0)")
        self.state_dim, self.action_dim, self.members = state_dim, action_dim, members
        self.alpha_s, self.alpha_a, self.smoothness = float(alpha_s), float(alpha_a), float(smoothness)
        if probe_source not in ("adjoint", "random"):
            raise ValueError(f"probe_source must be 'adjoint' or 'random', got {probe_source!r}")
        self.probe_source = probe_source
        """``adjoint``: the trainer stores the actor backward's own probes (one per transition)."""
        self.probes = (1 if probe_source == "adjoint" else probes) if jacobian_terms else 0
        self.probe_mixing, self.clip_probe_norm = probe_mixing, clip_probe_norm
        self.jacobian_fraction = float(jacobian_fraction)
        self.batch_size, self.buffer_capacity = batch_size, buffer_capacity
        init = torch.Generator().manual_seed(seed)
        self.net = EnsembleMLP(members, [state_dim + action_dim, *hidden, state_dim], activation,
                               layer_norm, generator=init)
        self.state_stats = RunningMoments(state_dim)
        self.delta_stats = RunningMoments(state_dim)
        self.to(device=device, dtype=dtype)
        self.optimizer = adamw(self.net.parameters(), lr, weight_decay)
        self._mixing = torch.Generator().manual_seed(seed + 1)
        self.fit_steps = 0

    @classmethod
    def from_config(cls, config, ctx: mb.BuildContext) -> "SobolevMLP":
        env = ctx.env
        if env is None:
            raise mb.PluginError("world_model 'sobolev_mlp' needs the env built first (ctx.env is None)")
        fields = config.model_dump(exclude={"kind"})
        return cls(env.state_dim, env.action_dim, **fields, seed=ctx.seed, device=ctx.device, dtype=ctx.dtype)

    # --- the dynamics -------------------------------------------------------------------------

    def _normalised_input(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        mean, std = self.state_stats.mean.to(state.dtype), self.state_stats.std(state.dtype)
        return torch.cat([(state - mean) / std, action], -1)

    def _members_delta_n(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised state change per member ``[M, N, S]`` from network inputs ``[M, N, S+A]``."""
        return self.net(x)

    def step(self, state: torch.Tensor, action: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """``[N, S]`` predicted next states (mean over members); differentiable w.r.t. state, action
        and parameters. ``generator`` is unused (the model is deterministic)."""
        expand = lambda x: x.unsqueeze(0).expand(self.members, *x.shape)  # noqa: E731
        return self.predict_members(expand(state), expand(action)).mean(0)

    # --- training -----------------------------------------------------------------------------

    def update_statistics(self, batch: mb.TransitionBatch) -> None:
        """Fold ``batch`` into the normalisation statistics (``fit`` does this before each step)."""
        self.state_stats.update(batch.state)
        self.delta_stats.update(batch.next_state - batch.state)

    def _clipped_targets(self, batch: mb.TransitionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Target probe rows ``(uᵀJ_s, uᵀJ_a)``, each row ``[uᵀJ_s, uᵀJ_a]`` scaled down to norm at
        most ``clip_probe_norm`` (stiff contacts); unchanged when clipping is off."""
        probe_s, probe_a = batch.probe_s, batch.probe_a
        if self.clip_probe_norm is None:
            return probe_s, probe_a
        norm = torch.cat([probe_s, probe_a], -1).norm(dim=-1, keepdim=True)
        scale = (self.clip_probe_norm / norm.clamp_min(1e-30)).clamp(max=1.0)
        return probe_s * scale, probe_a * scale

    def predict_members(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Raw next states per member ``[M, B, S]`` from per-member inputs ``[M, B, S]``, ``[M, B, A]``."""
        x = self._normalised_input(state, action)
        mean, std = self.delta_stats.mean.to(state.dtype), self.delta_stats.std(state.dtype)
        return state + mean + std * self._members_delta_n(x)

    def predict_members_with_vjp(self, state: torch.Tensor, action: torch.Tensor, u: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`predict_members` and the VJP ``(uᵀ∂ŝ'/∂s, uᵀ∂ŝ'/∂a)`` of cotangents ``u [M, B, S]`` in one
        hand-differentiated pass (:mod:`mbmix_world_models.input_vjp`): differentiable w.r.t. the parameters
        only, with the same values and parameter gradients as autograd's double backward, at about half the
        cost."""
        x = self._normalised_input(state, action)
        mean, std = self.delta_stats.mean.to(state.dtype), self.delta_stats.std(state.dtype)
        out, xi = forward_with_input_vjp(self.net, x, u * std)
        s = self.state_dim
        return state + mean + std * out, u + xi[..., :s] / self.state_stats.std(state.dtype), xi[..., s:]

    def loss(self, batch: mb.TransitionBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(total, state_loss, jacobian_loss)`` on ``batch`` with the current statistics (differentiable
        w.r.t. parameters): the balanced loss of :mod:`mbmix_world_models.loss` with the state error in units
        of ``σ_Δ``. ``jacobian_loss`` is the unweighted sum of the two relative Jacobian errors, ``None``
        without probes."""
        terms = self.loss_terms(batch)
        jacobian = None if terms.jacobian_s is None else terms.jacobian_s + terms.jacobian_a
        return terms.total, terms.state, jacobian

    def loss_terms(self, batch: mb.TransitionBatch):
        """The loss's parts (:class:`mbmix_world_models.loss.SobolevTerms`), the smoothness penalty included."""
        if self.probes > 0 and batch.probe_u is not None and self.clip_probe_norm is not None:
            probe_s, probe_a = self._clipped_targets(batch)
            batch = attrs.evolve(batch, probe_s=probe_s, probe_a=probe_a)
        return sobolev_loss(
            self.predict_members, batch, self.delta_stats.std(batch.state.dtype),
            self.alpha_s if self.probes else 0.0, self.alpha_a if self.probes else 0.0,
            members=self.members, jacobian_rows=self.jacobian_rows(len(batch)),
            probe_generator=self._mixing if self.probe_mixing else None,
            smoothness=self.smoothness if self.probes else 0.0,
            predict_vjp=self._vjp_route(),
        )

    def _vjp_route(self):
        """:meth:`predict_members_with_vjp` where the hand-differentiated pass applies (SiLU), else ``None``."""
        return self.predict_members_with_vjp if self.net.activation is F.silu else None

    def jacobian_rows(self, batch_size: int) -> int:
        """Rows of a ``batch_size`` minibatch that also get the Jacobian term (at least one)."""
        return max(1, min(batch_size, round(self.jacobian_fraction * batch_size)))

    def fit(self, batch: mb.TransitionBatch) -> dict[str, float]:
        """Update the statistics, then one AdamW step on :meth:`loss`. Metrics: ``model/loss``,
        ``model/state_loss``, with probes ``model/jacobian_loss`` and, for ``smoothness > 0``,
        ``model/smooth_loss`` (the unweighted penalty).

        A batch, loss or gradient with a NaN/inf skips the step: the statistics are restored, nothing
        moves, and ``model/skipped = 1`` is returned (the trainer counts it), so weights, statistics and
        optimiser state never become non-finite. Under data parallelism a skip on one rank is a skip on
        every rank (:func:`mbmix_fw.any_rank`)."""
        finite_batch = mb.all_finite((batch.state, batch.action, batch.next_state))
        if bool(mb.any_rank(~finite_batch)):  # data-parallel: every rank skips together (no one left waiting
            return {"model/skipped": 1.0}    # in the gradient all-reduce of the optimiser's pre-hook)
        saved = [b.clone() for b in (*self.state_stats.buffers(), *self.delta_stats.buffers())]
        self.update_statistics(batch)
        terms = self.loss_terms(batch)
        total, state_loss, smooth = terms.total, terms.state, terms.smooth
        jacobian_loss = None if terms.jacobian_s is None else terms.jacobian_s + terms.jacobian_a
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        finite = mb.all_finite([total.detach(), *grads])
        if bool(mb.any_rank(~finite)):
            for buffer, value in zip((*self.state_stats.buffers(), *self.delta_stats.buffers()), saved):
                buffer.copy_(value)
            self.optimizer.zero_grad(set_to_none=True)
            return {"model/skipped": 1.0}
        self.optimizer.step()
        self.fit_steps += 1
        metrics = {"model/loss": float(total.detach()), "model/state_loss": float(state_loss.detach())}
        if jacobian_loss is not None:
            metrics["model/jacobian_loss"] = float(jacobian_loss.detach())
        if smooth is not None:
            metrics["model/smooth_loss"] = float(smooth.detach())
        return metrics

    # --- evaluation ---------------------------------------------------------------------------

    def evaluate(self, batch: mb.TransitionBatch) -> dict[str, float]:
        """Held-out errors, in the env's raw coordinates for Jacobians.

        - ``model/state_error``: mean over samples and dimensions of ``((ŝ' − s') / σ_Δ)²``, the squared
          next-state error in units of the typical one-step change (the model's ``σ_Δ``).
        - ``model/jacobian_error`` (when ``batch`` carries probes): pooled relative Frobenius error
          ``sqrt(Σ_b ‖U_b(J_m − J_env)‖²_F / Σ_b ‖U_b J_env‖²_F)`` over ``J = [∂s'/∂s, ∂s'/∂a]``, with
          ``U_b`` the batch's probe rows. Exact when the batch holds basis probes
          (:func:`mbmix_fw.collect_jacobians`); with random probes the ``S`` factors cancel and it is a
          consistent ratio estimate. ``model/jacobian_error_s`` / ``_a`` are the two blocks alone.
          Targets are never clipped here.
        """
        products = None
        if batch.probe_u is not None and batch.probe_u.shape[1] == 1 and self._vjp_route() is not None:
            with torch.no_grad():  # the fused pass without its graph: one forward for s' and the VJP
                expand = lambda x: x.unsqueeze(0).expand(self.members, *x.shape)  # noqa: E731
                u = batch.probe_u[:, 0].to(batch.state.dtype)
                products = tuple(v.mean(0) for v in self.predict_members_with_vjp(
                    expand(batch.state), expand(batch.action), expand(u)))
                products = (products[0], products[1].unsqueeze(1), products[2].unsqueeze(1))
        return held_out_errors(self, batch, self.delta_stats.std(batch.state.dtype), products)

    # --- checkpointing ------------------------------------------------------------------------

    def get_extra_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "mixing_generator": self._mixing.get_state(),
                "fit_steps": self.fit_steps}

    def set_extra_state(self, state: dict) -> None:
        # Deep copy: Optimizer.load_state_dict keeps the given tensors, and Adam updates them in place.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self._mixing.set_state(state["mixing_generator"].clone())
        self.fit_steps = int(state["fit_steps"])
