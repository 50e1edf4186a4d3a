"""What does the Sobolev term cost per world-model update? (MB-MIX's model loss, method.md §1.3(d))

Times one ``SobolevMLP.fit`` step (statistics update, loss, backward, AdamW step) of the default
``sobolev_mlp`` config (hidden [256, 256], batch 256, 4 probes per transition, probe mixing on)
against the same model with ``alpha_s = alpha_a = 0`` (the plain-MSE ablation) on the same batch of
pendulum transitions. The two updates are timed alternately, pair after pair, and the medians are
compared, so load from other processes hits both alike; times are CPU times of this process. For information it also times the cheaper
update with the Jacobian term on a quarter of each minibatch (``jacobian_fraction = 0.25``) and the
dearer one that differentiates every stored probe (``probe_mixing = false``), and, as ``sobolev_autograd``,
the default update through ``autograd.grad(create_graph=True)`` instead of the model's hand-differentiated
forward + input VJP (``mbmix_world_models.input_vjp``; same loss and gradient), so what that pass saves is
measured in the same run.

Why the default does not reach 1.5: the Jacobian term needs the input VJP and a backward through it, on
every row of the batch: twice the large matmuls of a plain MSE step (one forward and one backward) and about
three times its elementwise passes, even written out by hand.

Goal: Sobolev/MSE update time ≤ 1.5 at equal batch size.

Run: ``python benchmarks/sobolev_cost.py [--pairs 60] [--threads 1 2]`` (about 1-2 min on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import mbmix_fw as mb
from mbmix_world_models import SobolevConfig, make_sobolev
from mbmix_toy import Pendulum, PendulumConfig

GOAL = 1.5


def pendulum_batch(env: Pendulum, n: int, probes: int, seed: int = 0) -> mb.TransitionBatch:
    g = torch.Generator().manual_seed(seed)
    state = (torch.rand(n, 2, generator=g) * 2 - 1) * torch.tensor([torch.pi, env.config.max_speed])
    action = torch.rand(n, 1, generator=g) * 2 - 1
    return mb.collect_transitions(env, state, action, probes, g)


def fit_seconds(model, batch) -> float:
    """CPU seconds of one update (``time.process_time``: on a shared, loaded machine wall time also measures
    the other tenants; at one torch thread CPU time is the update's own work)."""
    started = time.process_time()
    model.fit(batch)
    return time.process_time() - started


def measure(threads: int, pairs: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    env = Pendulum(PendulumConfig())
    ctx = mb.BuildContext.cpu(seed=0).with_env(env)
    models = {
        "mse": make_sobolev(SobolevConfig(alpha_s=0.0, alpha_a=0.0), ctx),
        "sobolev": make_sobolev(SobolevConfig(), ctx),
        "sobolev_f0.25": make_sobolev(SobolevConfig(jacobian_fraction=0.25), ctx),
        "sobolev_all_probes": make_sobolev(SobolevConfig(probe_mixing=False), ctx),
        "sobolev_autograd": make_sobolev(SobolevConfig(), ctx),
    }
    models["sobolev_autograd"].predict_members_with_vjp = None  # the loss falls back to autograd.grad
    batch_size = models["sobolev"].batch_size
    batch = pendulum_batch(env, batch_size, models["sobolev"].probes)
    plain = mb.TransitionBatch(batch.state, batch.action, batch.next_state)
    batches = {name: plain if model.probes == 0 else batch for name, model in models.items()}
    for name, model in models.items():  # warm-up: allocator, first-call overheads
        for _ in range(5):
            model.fit(batches[name])
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(pairs):
        for name, model in models.items():
            times[name].append(fit_seconds(model, batches[name]))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=60, help="timed rounds (one update of each model)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op threads")
    args = parser.parse_args()
    print("sobolev_cost: pendulum (S=2, A=1), default sobolev_mlp config, batch 256, median of "
          f"{args.pairs} interleaved updates")
    for threads in args.threads:
        med = measure(threads, args.pairs)
        print(f"  threads={threads}: update time: " + " | ".join(f"{k} {v * 1e3:.1f} ms" for k, v in med.items()))
        for name in ("sobolev", "sobolev_f0.25", "sobolev_all_probes", "sobolev_autograd"):
            ratio = med[name] / med["mse"]
            goal = f" (goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'})" if name == "sobolev" else ""
            print(f"  threads={threads}: ratio {name}/mse = {ratio:.2f}{goal}")


if __name__ == "__main__":
    main()
