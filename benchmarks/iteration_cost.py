"""What does one MB-MIX iteration cost against one SHAC iteration on the cloth? (CPU time, same process)

Builds ``cloth_shac`` and ``cloth_mix`` (MB-MIX: the λ-mixture, a Sobolev world model fitted every iteration
and, where the scheduler lets it act, model branches) in one process, runs them iteration by iteration,
alternating, and times each iteration's ``Trainer._iterate`` plus its one metric read with
``time.process_time`` (CPU seconds of this process: on a shared, loaded machine wall time measures the other
tenants as much as the code; with one torch thread CPU time is the work done). The first ``--warmup``
iterations of each trainer are not timed (warp kernel loading, lazy inits, the model's warm-up iterations).

Three MB-MIX settings are timed against the same SHAC iterations:

- ``cloth_mix`` as shipped: the error gate keeps the model's branches out while its held-out action-Jacobian
  error is above 0.8, so most iterations fit the model and do not branch;
- ``cloth_mix`` with the gate off (``scheduler.model_error_gate = 1e9``): the model branches on every timed
  iteration — the dearest MB-MIX iteration the recipe can run;
- ``cloth_mix`` as shipped but with the model fitted through ``autograd.grad(create_graph=True)`` instead of
  its hand-differentiated forward + input VJP (same loss and gradient): the iteration before that pass.

Goal: median MB-MIX / median SHAC iteration CPU time ≤ 1.5. The same run then measures the other cost goal,
the Sobolev update against a plain-MSE update (``benchmarks/sobolev_cost.py``'s measurement at one thread,
``--sobolev-pairs``; goal ≤ 1.5), so both ratios come from one process under the same load.

Run: ``OMP_NUM_THREADS=1 python benchmarks/iteration_cost.py [--iterations 12] [--warmup 6]``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import mbmix_fw as mb
from mbmix_fw.building.build import make_trainer

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sobolev_cost, a sibling script
GOAL = 1.5


def build(name: str, overrides: list[tuple[str, object]]):
    registry = mb.default_registry()
    recipe = mb.load_recipe(RECIPES / f"{name}.toml", registry, [("run.iterations", 10_000), *overrides])
    return make_trainer(recipe, None, "cpu", registry, progress=False)


def one_iteration(trainer) -> tuple[float, dict[str, float]]:
    """CPU seconds of one training iteration (plan, window, branches, updates, model fit, metric read)."""
    started = time.process_time()
    metrics = trainer._read_metrics(trainer._iterate(trainer._next_plan(trainer.planned_total())))
    trainer.iteration += 1
    trainer._last_metrics = metrics  # what the next plan reads (the gate's held-out error), as in train()
    return time.process_time() - started, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=12, help="timed iterations of each trainer")
    parser.add_argument("--sobolev-pairs", type=int, default=60, help="interleaved update pairs of the Sobolev "
                        "cost measurement (0: skip it)")
    parser.add_argument("--warmup", type=int, default=6, help="untimed first iterations (the recipe warms the "
                        "model up for 5)")
    args = parser.parse_args()
    print(f"iteration_cost: torch threads {torch.get_num_threads()}, CPU time per iteration (process_time), "
          f"medians of {args.iterations} alternating iterations after {args.warmup} untimed")
    trainers = {"shac": build("cloth_shac", []), "mbmix": build("cloth_mix", []),
                "mbmix_ungated": build("cloth_mix", [("scheduler.model_error_gate", 1e9)]),
                "mbmix_autograd": build("cloth_mix", [])}
    # The model fit through autograd.grad(create_graph=True), not the hand-differentiated pass (same loss).
    trainers["mbmix_autograd"].world_model.predict_members_with_vjp = None
    for trainer in trainers.values():
        for _ in range(args.warmup):
            one_iteration(trainer)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    branched: dict[str, int] = {name: 0 for name in trainers}
    for _ in range(args.iterations):
        for name, trainer in trainers.items():
            seconds, metrics = one_iteration(trainer)
            times[name].append(seconds)
            branched[name] += int(metrics.get("model/grad_share", 0.0) > 0)
    median = {name: statistics.median(t) for name, t in times.items()}
    for name in trainers:
        print(f"  {name}: {median[name] * 1e3:.0f} ms CPU / iteration (min {min(times[name]) * 1e3:.0f}, "
              f"max {max(times[name]) * 1e3:.0f}); iterations with model branches: {branched[name]}/{args.iterations}")
    for name in ("mbmix", "mbmix_ungated", "mbmix_autograd"):
        ratio = median[name] / median["shac"]
        print(f"  ratio {name}/shac = {ratio:.2f} (goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'})")
    if args.sobolev_pairs:
        import sobolev_cost

        med = sobolev_cost.measure(torch.get_num_threads(), args.sobolev_pairs)
        ratio = med["sobolev"] / med["mse"]
        print(f"  Sobolev update {med['sobolev'] * 1e3:.1f} ms CPU, MSE update {med['mse'] * 1e3:.1f} ms CPU "
              f"(medians of {args.sobolev_pairs} interleaved pairs): ratio {ratio:.2f} "
              f"(goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'}); jacobian_fraction 0.25: "
              f"{med['sobolev_f0.25'] / med['mse']:.2f}; through autograd.grad (the update before the "
              f"hand-differentiated pass): {med['sobolev_autograd'] / med['mse']:.2f}")


if __name__ == "__main__":
    main()
