"""How many evaluation episodes make ``eval/return`` a measurement? And what do more cost?

``eval/return`` is the mean return of ``run.eval_envs`` episodes from fixed initial states (seeded) with the
deterministic policy. As an estimate of the policy's expected return its standard error is
``σ_episode / √n``, where ``σ_episode`` is the spread of single-episode returns over initial states. This
script measures that spread for the recipe's *untrained* policy and, with ``--checkpoint``, a *trained* one
(``--episodes`` episodes, default 128), prints the standard error and the 95 % half-width (1.96·SE) of
``eval/return`` for 8, 16, 32 and 64 episodes, and times one evaluation with each count against the
8-episode evaluation measured in the same run (ratio).

Run: ``python benchmarks/eval_episodes.py recipes/cloth_shac.toml --checkpoint runs/cloth_shac/checkpoints/last.pt``.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

import mbmix_fw as mb
from mbmix_fw.building.build import make_trainer

COUNTS = (8, 16, 32, 64)


def spread(trainer, episodes: int) -> tuple[float, float]:
    returns = trainer.evaluation_returns(episodes).double()
    return float(returns.mean()), float(returns.std())


def seconds(trainer, episodes: int, repeats: int) -> float:
    trainer.evaluation_returns(episodes)  # warm-up (kernel compilation, allocator)
    started = time.perf_counter()
    for _ in range(repeats):
        trainer.evaluation_returns(episodes)
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--checkpoint", help="a trained run's checkpoints/last.pt")
    parser.add_argument("--episodes", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    registry = mb.default_registry()
    recipe = mb.load_recipe(args.recipe, registry)
    trainer = make_trainer(recipe, None, "cpu", registry, progress=False)
    policies = [("untrained", None)] + ([("trained", args.checkpoint)] if args.checkpoint else [])
    print(f"{args.recipe}: eval/return over {args.episodes} episodes; SE = σ/√n, ±95% = 1.96·SE")
    for name, checkpoint in policies:
        if checkpoint:
            trainer.load_checkpoint(checkpoint)
        mean, sigma = spread(trainer, args.episodes)
        cells = "  ".join(f"n={n}: SE {sigma / math.sqrt(n):.3g} (±{1.96 * sigma / math.sqrt(n):.3g})" for n in COUNTS)
        print(f"  {name:9s} mean {mean:.4g}  σ_episode {sigma:.3g}  {cells}")
    times = {n: seconds(trainer, n, args.repeats) for n in COUNTS}
    print("  time of one evaluation: " + "  ".join(
        f"n={n}: {t:.2f} s (×{t / times[COUNTS[0]]:.2f})" for n, t in times.items()))


if __name__ == "__main__":
    main()
