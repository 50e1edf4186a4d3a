"""Does mixing window lengths reduce gradient variance without costing bias? (MB-MIX, method.md §2)

For each study env (``lqr``, ``tabular_mdp``, plugin ``mbmix_toy``, both with an exact policy
gradient) and each ``H_max`` in {16, 32, 64}:

1. a linear policy is held fixed: ``lqr``: zero mean (W = 0, b = 0, σ = e^-1), so the closed loop is
   the open-loop system of spectral radius 0.95 — a random W makes the 128-step closed loop unstable,
   the return explodes and every short-window estimator misses ~100 % of the gradient; ``tabular_mdp``:
   W, b from seed 0, deterministic (σ = e^-20), as its exact gradient requires;
2. a critic is fitted to it (``mbmix_fw.diagnose.fit_critic_to_policy``: TD(0.95) policy evaluation on
   windows of ``H_max`` steps);
3. ``K`` gradient samples (fresh episodes from the reset distribution, 64 envs each) are drawn for
   SHAC at ``H_max/2`` and ``H_max`` and for MIX at ``H_max`` with each λ, from the same seed.

It prints Var(MIX λ)/Var(SHAC H_max) and the bias ‖mean − exact‖ of each estimator next to the bias of
SHAC at ``H_max/2``. The goal stated for MB-MIX's default λ: ratio ≤ 0.5 with bias no worse than
SHAC at ``H_max/2``. Episodes are 128 steps, so windows started at t = 0 never reach a time limit and
the exact gradient is that of one 128-step episode for every ``H_max``.

Run: ``python benchmarks/variance.py [--samples 64] [--json out.json]`` (about 10-20 min on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import mbmix_fw as mb
from mbmix_estimators import Mix, MixConfig, Shac, ShacConfig
from mbmix_fw.diagnose import fit_critic_to_policy, variance_study
from mbmix_toy import LQR, LQRConfig, TabularMDP, TabularMDPConfig

EPISODE_LENGTH = 128
NUM_ENVS = 64
GAMMA = 0.99


def study_env(kind: str) -> tuple[mb.DiffEnv, float]:
    """The env and the policy's initial log-std."""
    ctx = mb.BuildContext.cpu()
    if kind == "lqr":
        return LQR(LQRConfig(episode_length=EPISODE_LENGTH, num_envs=NUM_ENVS), ctx), -1.0
    return TabularMDP(TabularMDPConfig(episode_length=EPISODE_LENGTH, num_envs=NUM_ENVS), ctx), -20.0


def measure(kind: str, h_max: int, lams: list[float], samples: int, critic_iterations: int) -> dict:
    env, log_std = study_env(kind)
    torch.manual_seed(0)
    policy = mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, hidden=(), squash=False, init_log_std=log_std)
    if kind == "lqr":
        torch.nn.init.zeros_(policy.mean[0].weight)
        torch.nn.init.zeros_(policy.mean[0].bias)
    critic = mb.Critic(env.obs_dim)
    value_fn, fit = fit_critic_to_policy(env, policy, critic, GAMMA, torch.Generator().manual_seed(1),
                                         iterations=critic_iterations, horizon=h_max)
    critic.requires_grad_(False)
    configs = [
        (f"shac H={h_max // 2}", Shac(ShacConfig(horizon=h_max // 2, gamma=GAMMA))),
        (f"shac H={h_max}", Shac(ShacConfig(horizon=h_max, gamma=GAMMA))),
    ] + [(f"mix λ={lam:g}", Mix(MixConfig(lam=lam, horizon=h_max, gamma=GAMMA))) for lam in lams]
    rows = variance_study(env, policy, value_fn, configs, samples, seed=2)
    return {"env": kind, "h_max": h_max, "critic_fit": fit, "rows": rows}


def report(result: dict) -> None:
    rows = {r["label"]: r for r in result["rows"]}
    h = result["h_max"]
    shac_full, shac_half = rows[f"shac H={h}"], rows[f"shac H={h // 2}"]
    fit = result["critic_fit"]
    print(f"\n{result['env']}  H_max={h}  |exact grad|={shac_full['exact_grad_norm']:.4g}  "
          f"critic TD mse {fit['critic/td_loss_first']:.3g} -> {fit['critic/td_loss_last']:.3g}")
    print(f"  {'estimator':14s} {'Var/Var(SHAC H_max)':>20s} {'bias':>10s} {'± s.e.':>8s} {'rel. bias':>9s}  "
          f"{'bias ≤ SHAC H/2?':>15s}")
    for label, r in rows.items():
        ratio = r["variance"] / shac_full["variance"]
        ok = "yes" if r["bias"] <= shac_half["bias"] else "no"
        print(f"  {label:14s} {ratio:20.3f} {r['bias']:10.4g} {r['bias_se']:8.2g} {r['relative_bias']:9.3f}  {ok:>15s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--critic-iterations", type=int, default=300)
    parser.add_argument("--envs", nargs="+", default=["lqr", "tabular_mdp"], choices=["lqr", "tabular_mdp"])
    parser.add_argument("--horizons", nargs="+", type=int, default=[16, 32, 64])
    parser.add_argument("--lams", nargs="+", type=float, default=[0.5, 0.8, 0.9, 0.95, 0.98])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids oversubscription)")
    parser.add_argument("--json", help="write every measured row here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for kind in args.envs:
        for h_max in args.horizons:
            started = time.perf_counter()
            results.append(measure(kind, h_max, args.lams, args.samples, args.critic_iterations))
            report(results[-1])
            print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
