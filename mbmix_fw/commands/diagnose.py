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

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs
import torch

from ..contracts.env import DiffEnv
from ..errors import UserError
from ..contracts.estimator import EstimatorInput, GradientEstimator
from ..maths.nets import Critic, TanhGaussianPolicy
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


def _describe(estimator: GradientEstimator, env: DiffEnv) -> dict[str, Any]:
    config = getattr(estimator, "config", None)
    return {
        "kind": getattr(config, "kind", type(estimator).__name__.lower()),
        "horizon": estimator.horizon(env),
        "lam": getattr(config, "lam", None),
        "interval": getattr(config, "interval", None),
        "gamma": estimator.gamma,
    }


def variance_study(
    env: DiffEnv,
    policy: torch.nn.Module,
    critic_value_fn: ValueFn,
    configs: Sequence[tuple[str, GradientEstimator]],
    samples: int,
    *,
    seed: int = 0,
    policy_fn: PolicyFn | None = None,
    num_envs: int | None = None,
    exact: bool = True,
) -> list[dict[str, Any]]:
    """One row per ``(label, estimator)``: ``label, kind, horizon, lam, interval, gamma, variance, bias``
    (None without an exact gradient), ``relative_bias, bias_se, noise_floor, mean_grad_norm, samples,
    exact_grad_norm, exact_note``. Every configuration draws from a generator seeded with ``seed``."""
    exact_cache: dict[float, tuple[torch.Tensor | None, str]] = {}
    rows = []
    for label, estimator in configs:
        gamma = estimator.gamma
        if gamma not in exact_cache:
            exact_cache[gamma] = exact_gradient(env, policy, gamma) if exact else (None, "exact gradient off")
        flat_exact, note = exact_cache[gamma]
        generator = torch.Generator(device=env.device).manual_seed(seed)
        stats = gradient_statistics(policy, critic_value_fn, env, estimator, samples, generator,
                                    policy_fn=policy_fn, num_envs=num_envs, exact=flat_exact)
        rows.append({"label": label, **_describe(estimator, env), **stats.summary(), "exact_note": note})
    return rows


def pareto_frontier(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows (``bias``, ``variance``) no other row beats on both, by increasing bias."""
    frontier: list[dict[str, Any]] = []
    for row in sorted(points, key=lambda r: (r["bias"], r["variance"])):
        if not frontier or row["variance"] < frontier[-1]["variance"]:
            frontier.append(row)
    return frontier


def frontier_position(frontier_rows: Sequence[dict[str, Any]], row: dict[str, Any],
                      z_threshold: float = 2.0) -> dict[str, Any]:
    """Where ``row`` lies against the bias–variance frontier of ``frontier_rows`` (e.g. SHAC at every H).

    The frontier is the Pareto set of the rows, joined by straight lines (in bias, variance); beyond its
    ends it continues flat at its end points' variances. ``frontier_variance`` is its variance at
    ``row``'s bias, ``ratio = variance / frontier_variance``, and ``z = (frontier_variance − variance) / se``
    with ``se`` combining the variance standard errors (``variance_se``) of ``row`` and of the frontier
    there. ``position`` is ``below`` (less variance than the frontier at equal bias: ``z > z_threshold``),
    ``above`` (``z < −z_threshold``) or ``on`` (within ``z_threshold`` standard errors). Bias is taken as
    exact; its own standard errors (``bias_se``) are reported beside, not folded in.
    """
    front = pareto_frontier(frontier_rows)
    bias = row["bias"]
    if bias <= front[0]["bias"]:
        variance, se = front[0]["variance"], front[0]["variance_se"]
    elif bias >= front[-1]["bias"]:
        variance, se = front[-1]["variance"], front[-1]["variance_se"]
    else:
        right = next(i for i, r in enumerate(front) if r["bias"] >= bias)
        a, b = front[right - 1], front[right]
        w = (bias - a["bias"]) / (b["bias"] - a["bias"])
        variance = (1 - w) * a["variance"] + w * b["variance"]
        se = math.hypot((1 - w) * a["variance_se"], w * b["variance_se"])
    se_total = math.hypot(se, row["variance_se"])
    gap = variance - row["variance"]
    z = gap / se_total if se_total > 0 else math.copysign(math.inf, gap)
    position = "below" if z > z_threshold else "above" if z < -z_threshold else "on"
    return {"frontier_variance": variance, "ratio": row["variance"] / variance, "z": z, "position": position,
            "frontier": [r["label"] for r in front]}


def plot_variance_study(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """PNG: variance (top) and bias (bottom) of ``shac`` against H (left) and ``mix`` against λ (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), squeeze=False)
    panels = (("shac", "horizon", "SHAC: window H"), ("mix", "lam", "MIX: λ (at H_max)"))
    for col, (kind, key, xlabel) in enumerate(panels):
        chosen = sorted((r for r in rows if r["kind"] == kind and r[key] is not None), key=lambda r: r[key])
        xs = [r[key] for r in chosen]
        axes[0][col].plot(xs, [r["variance"] for r in chosen], "o-")
        axes[0][col].set_ylabel("total variance tr Cov(g)")
        with_bias = [r for r in chosen if r["bias"] is not None]
        if with_bias:
            xb = [r[key] for r in with_bias]
            axes[1][col].errorbar(xb, [r["bias"] for r in with_bias], yerr=[r["bias_se"] for r in with_bias],
                                  fmt="o-", label="‖mean − exact‖ ± s.e.")
            axes[1][col].plot(xb, [r["noise_floor"] for r in with_bias], "k:", label="noise floor")
            axes[1][col].legend(fontsize=8)
        else:
            axes[1][col].text(0.5, 0.5, "no exact gradient", ha="center", transform=axes[1][col].transAxes)
        axes[1][col].set_ylabel("bias")
        axes[1][col].set_xlabel(xlabel)
        for row in range(2):
            if chosen:
                axes[row][col].set_yscale("log")
            axes[row][col].grid(alpha=0.3)
    fig.suptitle(title or "gradient variance and bias at fixed parameters")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def variance_table(rows: Sequence[dict[str, Any]]) -> str:
    """The study's rows as an aligned plain-text table (``mbmix-fw diagnose variance`` prints it).

    Columns: estimator, window H, λ, total variance ``tr Cov(g)``, ``‖E g‖``, bias ``‖E g − ∇J‖`` ± its
    standard error, bias relative to ``‖∇J‖`` and the bias noise floor; ``—`` where there is no exact
    gradient. Notes (why a bias is missing) follow the table, each once.
    """
    def number(value: Any) -> str:
        return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"

    headers = ["estimator", "H", "λ", "variance", "|mean g|", "bias", "± s.e.", "rel. bias", "noise floor"]
    body = [[str(r["label"]), str(r["horizon"]), number(r.get("lam")), number(r["variance"]),
             number(r["mean_grad_norm"]), number(r.get("bias")), number(r.get("bias_se")),
             number(r.get("relative_bias")), number(r.get("noise_floor"))] for r in rows]
    widths = [max(len(line[i]) for line in [headers, *body]) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
             for line in [headers, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = list(dict.fromkeys(r["exact_note"] for r in rows if r.get("exact_note")))
    return "\n".join([*lines, *(f"note: {n}" for n in notes)])


def fit_critic_to_policy(
    env: DiffEnv,
    policy_fn: PolicyFn,
    critic: torch.nn.Module,
    gamma: float,
    generator: torch.Generator,
    *,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    lam: float = 0.95,
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
                                     window.done, gamma, lam)
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


def sweep_estimators(recipe, registry, ctx, env: DiffEnv, *, horizon_fractions: Sequence[float],
                     lams: Sequence[float]) -> tuple[int, list[tuple[str, GradientEstimator]]]:
    """``(H_max, [(label, estimator)])``: shac at ``H_max·fraction`` and mix at each λ at ``H_max``, where
    ``H_max`` is the recipe estimator's horizon (episode length for estimators without one). A recipe
    ``mix`` estimator lends its interval and start times to the mix rows."""
    base = recipe.estimator
    h_max = getattr(base, "horizon", None) or env.episode_length
    gamma = getattr(base, "gamma", 0.99)
    shac_cls, mix_cls = registry.estimator.get("shac").config, registry.estimator.get("mix").config
    configs = []
    for h in sorted({max(1, round(h_max * f)) for f in horizon_fractions}):
        configs.append((f"shac H={h}", registry.estimator.build(shac_cls(horizon=h, gamma=gamma), ctx)))
    extra = {k: getattr(base, k) for k in ("interval", "start_times") if base.kind == "mix"}
    for lam in lams:
        cfg = mix_cls(lam=lam, horizon=h_max, gamma=gamma, **extra)
        configs.append((f"mix λ={lam:g} H={h_max}", registry.estimator.build(cfg, ctx)))
    return h_max, configs


def variance_from_recipe(
    recipe,
    registry,
    samples: int = 64,
    json_out: str | Path | None = None,
    png_out: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    checkpoint: str | Path | None = None,
    horizon_fractions: Sequence[float] = (0.25, 0.5, 1.0),
    lams: Sequence[float] = (0.5, 0.9, 0.98, 1.0),
    critic_iterations: int = 300,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """``mbmix-fw diagnose variance RECIPE``: the variance study at the recipe's policy.

    1. Build the recipe's env (and estimator registry) with :func:`mbmix_fw.building.build.build_components`.
    2. The policy is the recipe's ``[policy]`` network initialised from ``run.seed`` exactly as the
       trainer initialises it, or the policy (and observation normaliser) of a trainer ``checkpoint``.
    3. Fit a fresh ``[critic]`` network to that fixed policy (:func:`fit_critic_to_policy`,
       ``critic_iterations`` windows, TD(λ) with the recipe's ``critic.lam`` and the estimator's γ).
    4. Sweep :func:`sweep_estimators` and measure each with :func:`variance_study` (``samples`` each).

    Writes ``json_out`` (settings, critic fit and rows) and ``png_out`` (:func:`plot_variance_study`)
    when given; returns the rows.
    """
    from ..building.build import build_components, resolve_device
    from ..training.checkpoint import read_checkpoint
    from ..contracts.context import BuildContext
    from ..maths.nets import ObsNormalizer

    say = progress or (lambda _: None)
    device = resolve_device(device)
    parts = build_components(recipe, registry, device)
    env = parts.env
    seed = recipe.run.seed
    torch.manual_seed(seed)  # the trainer seeds, then builds the policy first and the critic second
    pcfg, ccfg = recipe.policy, recipe.critic
    policy = TanhGaussianPolicy(env.obs_dim, env.action_dim, pcfg.hidden, pcfg.activation, pcfg.layer_norm,
                                pcfg.init_log_std, pcfg.squash).to(device)
    critic = Critic(env.obs_dim, ccfg.hidden, ccfg.activation, ccfg.layer_norm).to(device)
    obs_norm = ObsNormalizer(env.obs_dim).to(device) if pcfg.normalize_obs else None
    if checkpoint is not None:
        state = read_checkpoint(Path(checkpoint))  # checked as resume checks it; load_state_dict moves it to device
        policy.load_state_dict(state["policy"])
        if obs_norm is not None and state.get("obs_norm") is not None:
            obs_norm.load_state_dict(state["obs_norm"])
    normalize = (lambda o: obs_norm.normalize(o)) if obs_norm is not None else (lambda o: o)
    policy_fn = lambda obs, g: policy(normalize(obs), g)  # noqa: E731

    ctx = BuildContext(device=device, seed=seed).with_env(env)
    h_max, configs = sweep_estimators(recipe, registry, ctx, env, horizon_fractions=horizon_fractions, lams=lams)
    gamma = configs[0][1].gamma
    say(f"fitting the critic to the fixed policy ({critic_iterations} TD(λ) windows)")
    generator = torch.Generator(device=device).manual_seed(seed + 1)
    value_fn, fit = fit_critic_to_policy(env, policy_fn, critic, gamma, generator, normalize=normalize,
                                         lam=ccfg.lam, iterations=critic_iterations, horizon=h_max)
    critic.requires_grad_(False)
    say(f"measuring {len(configs)} estimators × {samples} samples")
    rows = variance_study(env, policy, value_fn, configs, samples, seed=seed, policy_fn=policy_fn,
                          exact=obs_norm is None)
    if obs_norm is not None:
        for row in rows:
            row["exact_note"] = "no exact gradient: the policy normalises observations (set normalize_obs = false)"
    if json_out is not None:
        settings = {"env": recipe.env.kind, "h_max": h_max, "samples": samples, "num_envs": env.num_envs,
                    "seed": seed, "checkpoint": None if checkpoint is None else str(checkpoint),
                    "critic_iterations": critic_iterations, **fit}
        path = Path(json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    if png_out is not None:
        plot_variance_study(rows, png_out, title=f"{recipe.env.kind}: H_max = {h_max}, {samples} samples")
    return rows
