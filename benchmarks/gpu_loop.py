"""How close does a whole SHAC iteration come to a bare actor-only window, and how often does it wait
on the device?

For each batch size (64 and 4096 pendulum envs) the script builds the ``pendulum_shac`` recipe's trainer
(SHAC, H = 32, 64×64 actor and critic, critic with 8 passes × 4 minibatches) and times whole iterations
(``Trainer._iterate`` + the one metric read), then times, in the same process, the *bare* actor-only
window of the same shape: a plain eager-torch 64×64 ELU MLP policy rolled H = 32 steps through the same
differentiable pendulum, ``-rewards.mean()`` backward, one Adam step — no critic, no normaliser, no
metrics. It also counts the host reads of one trainer iteration (``mbmix_fw.training.sync_count``; on CUDA each
is a blocking synchronisation). Printed last: the ratio trainer / bare steps per second for each size
(the goal on a GPU is ≥ 0.5).

Run: ``python benchmarks/gpu_loop.py [--device auto] [--iterations 5]``. On CPU, 4096 envs take about a
minute on 2 cores.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import mbmix_fw as mb
from mbmix_fw.building.build import make_trainer, resolve_device
from mbmix_fw.training.sync_count import count_host_reads

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "pendulum_shac.toml"
HORIZON = 32


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_steps_per_s(num_envs: int, device: torch.device, iterations: int) -> tuple[float, int]:
    registry = mb.default_registry()
    recipe = mb.load_recipe(RECIPE, registry, [("env.num_envs", num_envs), ("run.iterations", 1000)])
    trainer = make_trainer(recipe, None, device, registry, progress=False)
    plan = lambda i: trainer.scheduler.plan(i, recipe.run.iterations)  # noqa: E731
    trainer._read_metrics(trainer._iterate(plan(0)))  # warm-up
    with count_host_reads() as reads:
        trainer._read_metrics(trainer._iterate(plan(1)))
    synchronize(device)
    started = time.perf_counter()
    for i in range(iterations):
        trainer._read_metrics(trainer._iterate(plan(2 + i)))
    synchronize(device)
    elapsed = time.perf_counter() - started
    return iterations * HORIZON * num_envs / elapsed, reads.total


def bare_steps_per_s(num_envs: int, device: torch.device, iterations: int) -> float:
    from mbmix_toy import Pendulum, PendulumConfig

    env = Pendulum(PendulumConfig(num_envs=num_envs), mb.BuildContext(device=device))
    torch.manual_seed(0)
    policy = torch.nn.Sequential(torch.nn.Linear(env.obs_dim, 64), torch.nn.ELU(), torch.nn.Linear(64, 64),
                                 torch.nn.ELU(), torch.nn.Linear(64, env.action_dim), torch.nn.Tanh()).to(device)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    state = env.reset(num_envs)

    def window(state):
        total = torch.zeros((), device=device)
        for _ in range(HORIZON):
            action = policy(env.observe(state))
            next_state = env.step(state, action)
            total = total + env.reward(state, action, next_state).mean()
            state = next_state
        opt.zero_grad(set_to_none=True)
        (-total).backward()
        opt.step()
        return env.reset(num_envs)  # fresh episodes: the bare loop never drifts out of range

    state = window(state)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    for _ in range(iterations):
        state = window(state)
    synchronize(device)
    return iterations * HORIZON * num_envs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per measurement")
    parser.add_argument("--envs", type=int, nargs="+", default=[64, 4096])
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; H = {HORIZON}")
    ratios = []
    for n in args.envs:
        shac, reads = trainer_steps_per_s(n, device, args.iterations)
        bare = bare_steps_per_s(n, device, args.iterations)
        print(f"{n:5d} envs: SHAC iteration {shac:12,.0f} env-steps/s, {reads} host read(s) per iteration; "
              f"bare actor window {bare:12,.0f} env-steps/s")
        ratios.append((n, shac / bare))
    for n, ratio in ratios:
        print(f"ratio SHAC iteration / bare actor window at {n} envs: {ratio:.2f}x")


if __name__ == "__main__":
    main()
