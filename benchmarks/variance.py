"""Where does MIX lie against SHAC's whole bias–variance frontier? (MB-MIX, method.md §2)

SHAC trades bias for variance through its window length H alone: short windows lean on the critic
(biased, low variance), long ones on the simulator's gradient (less biased, high variance). MIX is only
interesting if it does better than that trade-off, so it is compared with SHAC at *every* H = 1 … H_max,
not with SHAC at H_max alone (being less noisy than SHAC at H_max is easy: SHAC at a shorter H also is).

For each study env (``lqr``, ``tabular_mdp``: plugin ``mbmix_toy``, both with an exact policy gradient)
and each of several fixed linear policies (``--policies``, seeded):

1. the policy is held fixed: ``lqr``: W = 0 (a random W makes the 128-step closed loop unstable) and a
   random action offset b ~ N(0, 0.5²) per policy seed (policy 0: b = 0), σ = e^-1; ``tabular_mdp``: W, b
   from the policy seed, deterministic (σ = e^-20), as its exact gradient requires;
2. a critic is fitted to it (``mbmix_fw.diagnostics.variance.fit_critic_to_policy``: TD(0.95) policy evaluation);
3. ``K`` gradient samples (fresh episodes from the reset distribution, 64 envs each; one generator seed
   for every estimator: common random numbers) are drawn for SHAC at every H ≤ H_max and for MIX at
   H_max with each λ; bias = ‖mean − exact‖, with standard errors of bias and variance.

SHAC's frontier is the Pareto set of its (bias, variance) points joined by straight lines
(``mbmix_fw.diagnostics.variance.frontier_position``); for each MIX λ the script prints its variance over the
frontier's variance at MIX's bias (ratio), the z-score of the gap, and ``below`` / ``on`` / ``above``
(±2 standard errors), then, per env, the ratio's mean ± standard error over the policies.

Run: ``python benchmarks/variance.py [--h-max 16] [--policies 3] [--samples 32] [--json out.json]``
(defaults: about 3 minutes on 2 shared CPU cores).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

import mbmix_fw as mb
from mbmix_estimators import Mix, MixConfig, Shac, ShacConfig
from mbmix_fw.diagnostics.variance import fit_critic_to_policy, frontier_position, variance_study
from mbmix_toy import LQR, LQRConfig, TabularMDP, TabularMDPConfig

EPISODE_LENGTH = 128
NUM_ENVS = 64
GAMMA = 0.99


def study_setup(kind: str, policy_seed: int) -> tuple[mb.DiffEnv, torch.nn.Module]:
    """The env and the fixed policy number ``policy_seed``."""
    ctx = mb.BuildContext.cpu()
    torch.manual_seed(policy_seed)
    if kind == "lqr":
        env = LQR(LQRConfig(episode_length=EPISODE_LENGTH, num_envs=NUM_ENVS), ctx)
        policy = mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, hidden=(), squash=False, init_log_std=-1.0)
        torch.nn.init.zeros_(policy.mean[0].weight)
        with torch.no_grad():
            policy.mean[0].bias.copy_(0.5 * torch.randn(env.action_dim) if policy_seed else 0.0)
        return env, policy
    env = TabularMDP(TabularMDPConfig(episode_length=EPISODE_LENGTH, num_envs=NUM_ENVS), ctx)
    return env, mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, hidden=(), squash=False, init_log_std=-20.0)


def measure(kind: str, policy_seed: int, h_max: int, lams: list[float], samples: int,
            critic_iterations: int) -> dict:
    env, policy = study_setup(kind, policy_seed)
    critic = mb.Critic(env.obs_dim)
    value_fn, fit = fit_critic_to_policy(env, policy, critic, GAMMA, torch.Generator().manual_seed(1),
                                         iterations=critic_iterations, horizon=h_max)
    critic.requires_grad_(False)
    configs = [(f"shac H={h}", Shac(ShacConfig(horizon=h, gamma=GAMMA))) for h in range(1, h_max + 1)]
    configs += [(f"mix λ={lam:g}", Mix(MixConfig(lam=lam, horizon=h_max, gamma=GAMMA))) for lam in lams]
    rows = variance_study(env, policy, value_fn, configs, samples, seed=2)
    shac = [r for r in rows if r["kind"] == "shac"]
    for row in rows:
        if row["kind"] == "mix":
            row.update(frontier_position(shac, row))
    return {"env": kind, "policy_seed": policy_seed, "h_max": h_max, "critic_fit": fit, "rows": rows}


def report(result: dict) -> None:
    rows = result["rows"]
    shac = {r["horizon"]: r for r in rows if r["kind"] == "shac"}
    h = result["h_max"]
    front = rows[-1]["frontier"] if rows[-1]["kind"] == "mix" else []
    print(f"\n{result['env']}  policy {result['policy_seed']}  H_max={h}  |exact grad|="
          f"{shac[h]['exact_grad_norm']:.4g}  SHAC frontier: {', '.join(l.split('=')[1] for l in front)}")
    print("  SHAC H:    " + " ".join(f"{k:>7d}" for k in shac))
    print("  bias:      " + " ".join(f"{r['bias']:7.3g}" for r in shac.values()))
    print("  variance:  " + " ".join(f"{r['variance']:7.3g}" for r in shac.values()))
    print(f"  {'estimator':11s} {'bias ± s.e.':>17s} {'variance ± s.e.':>21s} {'frontier var':>12s} "
          f"{'ratio':>6s} {'z':>6s}  position")
    for r in rows:
        if r["kind"] == "mix":
            print(f"  {r['label']:11s} {r['bias']:9.4g} ± {r['bias_se']:<6.2g}{r['variance']:12.4g} ± "
                  f"{r['variance_se']:<7.2g}{r['frontier_variance']:12.4g} {r['ratio']:6.3f} {r['z']:6.1f}  "
                  f"{r['position']}")


def summarise(results: list[dict]) -> None:
    print("\nsummary: Var(MIX) / Var(SHAC frontier at MIX's bias), mean ± s.e. over policies; positions")
    keys = sorted({(res["env"], r["label"]) for res in results for r in res["rows"] if r["kind"] == "mix"})
    for env, label in keys:
        found = [r for res in results if res["env"] == env for r in res["rows"] if r["label"] == label]
        ratios = [r["ratio"] for r in found]
        se = statistics.stdev(ratios) / math.sqrt(len(ratios)) if len(ratios) > 1 else float("nan")
        positions = ", ".join(r["position"] for r in found)
        print(f"  {env:12s} {label:11s} {statistics.mean(ratios):.3f} ± {se:.3f}   ({positions})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--critic-iterations", type=int, default=100)
    parser.add_argument("--envs", nargs="+", default=["lqr", "tabular_mdp"], choices=["lqr", "tabular_mdp"])
    parser.add_argument("--h-max", type=int, default=16)
    parser.add_argument("--policies", type=int, default=3, help="fixed policies per env (seeds 0, 1, …)")
    parser.add_argument("--lams", nargs="+", type=float, default=[0.8, 0.9, 0.94])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids oversubscription)")
    parser.add_argument("--json", help="write every measured row here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for kind in args.envs:
        for seed in range(args.policies):
            started = time.perf_counter()
            results.append(measure(kind, seed, args.h_max, args.lams, args.samples, args.critic_iterations))
            report(results[-1])
            print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    summarise(results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
