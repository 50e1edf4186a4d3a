"""Gradient-variance diagnostics: how noisy and how biased is each estimator at fixed parameters?

MB-MIX's claim (arXiv 2503.01178, method.md §2) is ``Var(MIX) ≤ Var(SHAC)``; this module measures it.
At a fixed policy and a fixed (target) critic, an estimator is run ``K`` times; each run is one *sample*:

- a fresh start cursor ``Cursor(env.reset(num_envs, generator), t = 0)`` — fresh episodes at their
  first step, so every sample estimates the gradient of the same quantity, the expected return of an
  episode from the reset distribution (what ``env.exact_policy_gradient`` returns);
- the gradient of the estimator's loss w.r.t. ``policy.parameters()``, flattened and rescaled to the
  gradient of the *per-env objective*: ``g = -T · ∇θ loss`` with ``T = estimator.horizon(env)``. Every
  built-in loss is ``-(Σ objectives)/(T·N)``, so ``g`` estimates ``∇θ E[J]`` on the same scale as the
  exact gradient. (Only meaningful for one start per segment; ``mix`` with ``start_times = "all"``
  averages over later start times and its ``g`` is not comparable to the exact gradient.)

Reported per estimator (float64): the mean gradient; the *total variance* ``tr Cov(g)`` (unbiased, over
the ``K`` samples; the variance of an ``N``-env batch gradient, which is what one policy update sees);
and, when the env knows its exact gradient ``g*``, the bias ``‖mean − g*‖``, its relative size
``‖mean − g*‖ / ‖g*‖``, a Monte-Carlo standard error (delta method: the standard error of the mean
projected on the bias direction) and the *noise floor* ``sqrt(tr Cov / K)`` — the size ``‖mean − g*‖``
would have for an unbiased estimator, so a bias near the floor is not resolved by ``K`` samples.

Samples of different estimators use the same seed (common random numbers), so differences between
estimators are not differences in start states.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import attrs
import torch

from ..contracts.env import DiffEnv
from ..contracts.estimator import EstimatorInput, GradientEstimator
from ..errors import UserError
from ..maths.returns import lambda_returns
from ..maths.rollouts import Cursor, PolicyFn, ValueFn, rollout


@attrs.frozen(eq=False)
class GradientStatistics:
    """Statistics of ``samples`` gradient samples (see the module docstring); tensors are float64 ``[P]``."""

    samples: int
    mean: torch.Tensor
    variance: float
    exact: torch.Tensor | None = None
    bias: float | None = None
    relative_bias: float | None = None
    bias_se: float | None = None
    noise_floor: float | None = None
    variance_se: float | None = None
    """Standard error of ``variance`` (from the spread of the samples' squared deviations)."""

    @property
    def mean_grad_norm(self) -> float:
        return float(self.mean.norm())

    def summary(self) -> dict[str, Any]:
        """Scalars only (JSON-ready)."""
        return {
            "samples": self.samples, "variance": self.variance, "mean_grad_norm": self.mean_grad_norm,
            "bias": self.bias, "relative_bias": self.relative_bias, "bias_se": self.bias_se,
            "noise_floor": self.noise_floor, "variance_se": self.variance_se,
            "exact_grad_norm": None if self.exact is None else float(self.exact.norm()),
        }


def _flat(tensors: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([
        (torch.zeros_like(p) if g is None else g).detach().reshape(-1).to(torch.float64).cpu()
        for g, p in zip(tensors, like)
    ])


def gradient_samples(
    policy: torch.nn.Module,
    value_fn: ValueFn,
    env: DiffEnv,
    estimator: GradientEstimator,
    samples: int,
    generator: torch.Generator,
    *,
    policy_fn: PolicyFn | None = None,
    num_envs: int | None = None,
) -> torch.Tensor:
    """``[samples, P]`` float64: ``g = -T·∇θ loss`` from fresh episodes (reset, ``t = 0``) each time.

    ``policy_fn`` defaults to ``policy`` itself (pass a wrapper when the policy sees normalised
    observations); gradients are taken w.r.t. ``policy.parameters()``.
    """
    if samples < 2:
        raise ValueError(f"need at least 2 samples to estimate a variance, got {samples}")
    params = [p for p in policy.parameters()]
    policy_fn = policy if policy_fn is None else policy_fn
    n = env.num_envs if num_envs is None else num_envs
    scale = float(estimator.horizon(env))
    out = []
    for _ in range(samples):
        start = Cursor(env.reset(n, generator), torch.zeros(n, dtype=torch.long, device=env.device))
        inp = EstimatorInput(policy_fn=policy_fn, value_fn=value_fn, env=env, dynamics=env,
                             start=start, generator=generator)
        loss = estimator.estimate(inp).loss
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        out.append(-scale * _flat(grads, params))
    return torch.stack(out)


def statistics_of(samples: torch.Tensor, exact: torch.Tensor | None = None) -> GradientStatistics:
    """Mean, total variance and (with ``exact``) bias statistics of ``[K, P]`` gradient samples."""
    k = samples.shape[0]
    mean = samples.mean(0)
    centred = samples - mean
    squared = centred.pow(2).sum(1)  # each sample's squared distance to the mean: variance = their mean·k/(k-1)
    variance = float(squared.sum() / (k - 1))
    variance_se = float(squared.std(unbiased=True) / math.sqrt(k) * k / (k - 1))
    if exact is None:
        return GradientStatistics(k, mean, variance, variance_se=variance_se)
    exact = exact.to(torch.float64).cpu()
    error = mean - exact
    bias = float(error.norm())
    exact_norm = float(exact.norm())
    if bias > 0:
        direction = error / bias
        bias_se = float((centred @ direction).std(unbiased=True) / math.sqrt(k))
    else:
        bias_se = 0.0
    return GradientStatistics(
        k, mean, variance, exact, bias,
        bias / exact_norm if exact_norm > 0 else None, bias_se, math.sqrt(variance / k), variance_se,
    )


def exact_gradient(env: DiffEnv, policy: torch.nn.Module, gamma: float) -> tuple[torch.Tensor | None, str]:
    """``(flat exact gradient or None, note)``: ``env.exact_policy_gradient`` flattened, or why not."""
    try:
        grads = env.exact_policy_gradient(policy, gamma)
    except UserError as exc:
        return None, f"no exact gradient: {exc}"
    if grads is None:
        return None, f"{type(env).__name__} has no exact gradient"
    return _flat(grads, list(policy.parameters())), "exact gradient from env.exact_policy_gradient"


def gradient_statistics(
    policy: torch.nn.Module,
    value_fn: ValueFn,
    env: DiffEnv,
    estimator: GradientEstimator,
    samples: int,
    generator: torch.Generator,
    *,
    policy_fn: PolicyFn | None = None,
    num_envs: int | None = None,
    exact: torch.Tensor | None | str = "auto",
) -> GradientStatistics:
    """Draw ``samples`` gradients (:func:`gradient_samples`) and summarise them (:func:`statistics_of`).

    ``exact="auto"`` asks ``env.exact_policy_gradient(policy, estimator.gamma)``; pass a flat tensor to
    reuse one, or ``None`` to skip the bias.
    """
    if isinstance(exact, str):
        exact, _ = exact_gradient(env, policy, estimator.gamma)
    draws = gradient_samples(policy, value_fn, env, estimator, samples, generator,
                             policy_fn=policy_fn, num_envs=num_envs)
    return statistics_of(draws, exact)


def fit_critic_to_policy(
    env: DiffEnv,
    policy_fn: PolicyFn,
    critic: torch.nn.Module,
    gamma: float,
    generator: torch.Generator,
    *,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    td_lambda: float = 0.95,
    iterations: int = 300,
    horizon: int = 32,
    num_envs: int | None = None,
    steps_per_window: int = 4,
    lr: float = 2e-3,
) -> tuple[ValueFn, dict[str, float]]:
    """Policy evaluation: regress ``critic`` on TD(λ) targets of the *fixed* policy's rollouts.

    Returns ``(value_fn, metrics)`` with ``value_fn(obs) = offset + scale · critic(normalize(obs))``.
    ``offset`` and ``scale`` are the mean and standard deviation of the first window's discounted
    reward-to-go, so the network regresses targets of unit scale whatever the reward scale (LQR costs
    run into the hundreds). ``iterations`` windows of ``horizon`` steps are rolled out without
    gradients, the cursor carried from window to window (starting from fresh resets) so the states
    cover whole episodes, as in training. Each window's targets are :func:`mbmix_fw.lambda_returns`
    bootstrapped from the current value function (no target copy: the policy does not move, so plain
    fitted TD(λ) suffices), followed by ``steps_per_window`` full-batch Adam steps on the squared error
    in network units. ``metrics`` hold the mean squared TD error (in reward units) of the first and last
    10 % of iterations.
    """
    normalize = (lambda o: o) if normalize is None else normalize
    n = env.num_envs if num_envs is None else num_envs
    opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.7, 0.95))
    cursor = Cursor(env.reset(n, generator), torch.zeros(n, dtype=torch.long, device=env.device))
    offset, scale = 0.0, 1.0
    value_fn = lambda obs: offset + scale * critic(normalize(obs))  # noqa: E731 - reads the final offset/scale
    losses = []
    for i in range(iterations):
        with torch.no_grad():
            window = rollout(policy_fn, env, env, cursor, horizon, generator)
            if i == 0:
                to_go = lambda_returns(window.rewards, torch.zeros_like(window.rewards), window.terminated,
                                       window.done, gamma, 1.0)
                offset, scale = float(to_go.mean()), max(float(to_go.std()), 1e-6)
            targets = lambda_returns(window.rewards, value_fn(window.next_obs), window.terminated,
                                     window.done, gamma, td_lambda)
        cursor = window.end
        for _ in range(steps_per_window):
            loss = ((value_fn(window.obs) - targets) / scale).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(critic.parameters(), 1.0)
            opt.step()
        losses.append(float(loss.detach()) * scale**2)
    tenth = max(1, len(losses) // 10)
    metrics = {"critic/td_loss_first": sum(losses[:tenth]) / tenth,
               "critic/td_loss_last": sum(losses[-tenth:]) / tenth,
               "critic/offset": offset, "critic/scale": scale}
    return value_fn, metrics
