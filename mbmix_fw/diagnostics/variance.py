"""The variance study: the estimator family (SHAC at several windows, MIX at several λ) measured at one
fixed policy and critic, its table, its plot and its Pareto frontier of variance against bias — and the
study run from a recipe (``mbmix-fw diagnose variance``). The statistics themselves:
:mod:`mbmix_fw.diagnostics.gradient_statistics`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..contracts.env import DiffEnv
from ..contracts.estimator import GradientEstimator
from ..maths.rollouts import PolicyFn, ValueFn
from .figures import save_figure
from .gradient_statistics import exact_gradient, fit_critic_to_policy, gradient_statistics


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
    return save_figure(fig, path, title or "gradient variance and bias at fixed parameters")


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
       ``critic_iterations`` windows, TD(λ) with the recipe's ``critic.td_lambda`` and the estimator's γ).
    4. Sweep :func:`sweep_estimators` and measure each with :func:`variance_study` (``samples`` each).

    Writes ``json_out`` (settings, critic fit and rows) and ``png_out`` (:func:`plot_variance_study`)
    when given; returns the rows.
    """
    from ..building.build import build_components, resolve_device
    from ..contracts.context import BuildContext
    from ..training.checkpoint import read_checkpoint
    from ..training.setup import build_networks, resolve_dtype, seed_everything

    say = progress or (lambda _: None)
    device = resolve_device(device)
    parts = build_components(recipe, registry, device)
    env = parts.env
    seed = recipe.run.seed
    seed_everything(seed)  # the trainer's order: seed, then the networks (policy first, critic second)
    dtype = resolve_dtype(recipe.run.dtype, env, device)
    networks = build_networks(env, recipe.policy, recipe.critic, device, dtype)
    policy, critic, obs_norm = networks.policy, networks.critic, networks.obs_norm
    ccfg = recipe.critic
    if checkpoint is not None:
        state = read_checkpoint(Path(checkpoint))  # checked as resume checks it; load_state_dict moves it to device
        policy.load_state_dict(state["policy"])
        if obs_norm is not None and state.get("obs_norm") is not None:
            obs_norm.load_state_dict(state["obs_norm"])
    normalize = networks.normalize
    policy_fn = lambda obs, g: policy(normalize(obs), g)  # noqa: E731

    ctx = BuildContext(device=device, seed=seed).with_env(env)
    h_max, configs = sweep_estimators(recipe, registry, ctx, env, horizon_fractions=horizon_fractions, lams=lams)
    gamma = configs[0][1].gamma
    say(f"fitting the critic to the fixed policy ({critic_iterations} TD(λ) windows)")
    generator = torch.Generator(device=device).manual_seed(seed + 1)
    value_fn, fit = fit_critic_to_policy(env, policy_fn, critic, gamma, generator, normalize=normalize,
                                         td_lambda=ccfg.td_lambda, iterations=critic_iterations, horizon=h_max)
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
