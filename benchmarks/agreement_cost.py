"""What does measuring split-half gradient agreement cost? The ``agree`` scheduler's signal
(``grad/half_cosine``, ``mbmix_fw/training/agreement.py``) against plain SHAC, same recipe, same window.

For each recipe (``cloth_shac``: the warp cloth, 8 envs, H = 16; ``pendulum_shac``: a cheap simulator where
the policy's share of the cost, and so the overhead, is largest) the script builds two trainers in the
same process: the recipe as it is (``model_free``) and the recipe with ``scheduler.kind = "agree"`` pinned
to the recipe's horizon (``min_horizon = max_horizon``), so both roll identical windows and only the
measurement differs. It times whole iterations (``Trainer._iterate`` + the one metric read), alternating
the two trainers iteration by iteration so machine load hits both alike, and prints the ratio of median
iteration times (agree / plain; 1.0 = free).

Run: ``python benchmarks/agreement_cost.py [--iterations 12]`` (CPU; the cloth compiles warp once).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import mbmix_fw as mb
from mbmix_fw.building.build import make_trainer

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def build(name: str, agree: bool):
    registry = mb.default_registry()
    horizon = mb.load_recipe(RECIPES / f"{name}.toml", registry).estimator.horizon
    overrides = [("run.iterations", 10_000)]
    if agree:
        overrides += [("scheduler.kind", "agree"), ("scheduler.min_horizon", horizon),
                      ("scheduler.max_horizon", horizon)]
    recipe = mb.load_recipe(RECIPES / f"{name}.toml", registry, overrides)
    return make_trainer(recipe, None, "cpu", registry, progress=False)


def one_iteration(trainer, i: int) -> float:
    started = time.perf_counter()
    trainer._read_metrics(trainer._iterate(trainer._plan(i, 10_000, {})))
    return time.perf_counter() - started


def compare(name: str, iterations: int) -> float:
    plain, agree = build(name, False), build(name, True)
    for trainer in (plain, agree):
        one_iteration(trainer, 0)  # warm-up: lazy inits, warp kernels
    times = {"plain": [], "agree": []}
    for i in range(1, iterations + 1):
        times["plain"].append(one_iteration(plain, i))
        times["agree"].append(one_iteration(agree, i))
    ratio = statistics.median(times["agree"]) / statistics.median(times["plain"])
    print(f"{name}: plain SHAC {statistics.median(times['plain']) * 1e3:.1f} ms/iteration, with split-half "
          f"agreement {statistics.median(times['agree']) * 1e3:.1f} ms/iteration (medians of {iterations})")
    print(f"{name}: ratio agree / plain = {ratio:.3f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--recipes", nargs="+", default=["cloth_shac", "pendulum_shac"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.recipes:
        compare(name, args.iterations)


if __name__ == "__main__":
    main()
