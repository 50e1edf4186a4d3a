"""What XLA's CPU compile settings cost and save on a Brax env: first use (build, trace, compile) and the
differentiable window's speed, each flag set against XLA's defaults, measured in the same run.

XLA reads ``XLA_FLAGS`` once per process, so each measurement is a fresh process with the flag set in its
environment and the compilation cache off (every program is compiled, none loaded). The flag sets take
turns round after round, so a change of machine load hits all of them alike; the table gives each set's
median over the rounds and its ratios to the defaults' median.

Why it exists: the test suite compiles with ``--xla_backend_optimization_level=0
--xla_cpu_use_fusion_emitters=false`` (``tests/conftest.py``), because on a 2-core CPU with empty caches the
Brax tests spend most of their time in XLA's compiler. This script is the evidence for that choice, and for
whether a user's CPU run would gain from either flag.

Each process: build the env, then one ``H``-step bridged window (``mb.rollout`` with open-loop actions,
``backward`` through the bridge) — its time is the first-use cost, mostly compiling; then the best of
``--repeats`` windows, reported as differentiable env-steps per second (``H·N`` per window).

Run: ``python benchmarks/xla_cpu_flags.py --env reacher --num-envs 32 --horizon 16 --rounds 2``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

DEFAULT_SETS = (
    "defaults=",
    "older-emitters=--xla_cpu_use_fusion_emitters=false",
    "cheap=--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false",
)

ONE_PROCESS = r"""
import json, sys, time
started = time.perf_counter()
import torch
torch.set_num_threads(1)
import mbmix_fw as mb
from mbmix_brax import BraxConfig
from mbmix_brax.env import BraxEnv

name, backend, n, horizon, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
env = BraxEnv(BraxConfig(name=name, backend=backend, num_envs=n, episode_length=10**6))
generator = torch.Generator().manual_seed(0)
actions = (0.5 * torch.randn(horizon, n, env.action_dim, generator=generator)).requires_grad_(True)
start = env.reset(n, generator)


def window():
    steps = iter(range(horizon))
    out = mb.rollout(lambda obs, g: actions[next(steps)], env, env, mb.Cursor(start, None), horizon)
    actions.grad = None
    out.rewards.sum().backward()
    return float(actions.grad.abs().sum())


window()
first_use = time.perf_counter() - started
best = float("inf")
for _ in range(repeats):
    begun = time.perf_counter()
    window()
    best = min(best, time.perf_counter() - begun)
print(json.dumps({"first_use_s": first_use, "diff_steps_per_s": horizon * n / best}))
"""


def parse_set(text: str) -> tuple[str, str]:
    """``label=FLAGS`` (FLAGS may be empty: XLA's defaults)."""
    label, separator, flags = text.partition("=")
    if not separator or not label:
        raise argparse.ArgumentTypeError(f"a flag set is label=FLAGS, got {text!r}")
    return label, flags.strip()


def measure(flags: str, args) -> dict:
    """One fresh process under ``flags``, with the compilation cache off."""
    environ = {**os.environ, "XLA_FLAGS": flags, "MBMIX_FW_JAX_CACHE": "off", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", ONE_PROCESS, args.env, args.backend, str(args.num_envs),
                           str(args.horizon), str(args.repeats)], env=environ, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the run under XLA_FLAGS={flags!r} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(sets: list[tuple[str, str]], runs: dict[str, list[dict]]) -> dict:
    """Each set's medians over the rounds, and its ratios to the first set's (the defaults)."""
    medians = {label: {key: statistics.median(run[key] for run in runs[label])
                       for key in ("first_use_s", "diff_steps_per_s")} for label, _ in sets}
    base = medians[sets[0][0]]
    return {label: {**medians[label],
                    "first_use_ratio": medians[label]["first_use_s"] / base["first_use_s"],
                    "speed_ratio": medians[label]["diff_steps_per_s"] / base["diff_steps_per_s"]}
            for label, _ in sets}


def table(sets: list[tuple[str, str]], summary: dict) -> str:
    lines = ["| flags | first use (s) | ÷ defaults | diff-steps/s | ÷ defaults |", "|---|---|---|---|---|"]
    for label, flags in sets:
        row = summary[label]
        lines.append(f"| {label} (`{flags or 'none'}`) | {row['first_use_s']:.1f} | {row['first_use_ratio']:.2f} "
                     f"| {row['diff_steps_per_s']:.0f} | {row['speed_ratio']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="reacher")
    parser.add_argument("--backend", default="generalized")
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="windows timed per process (best is kept)")
    parser.add_argument("--rounds", type=int, default=2, help="processes per flag set, the sets taking turns")
    parser.add_argument("--set", dest="sets", type=parse_set, action="append",
                        help="label=XLA_FLAGS, repeatable; the first is the baseline (default: "
                             + "; ".join(DEFAULT_SETS) + ")")
    args = parser.parse_args()
    sets = args.sets or [parse_set(text) for text in DEFAULT_SETS]
    runs: dict[str, list[dict]] = {label: [] for label, _ in sets}
    for round_index in range(args.rounds):
        for label, flags in sets:
            runs[label].append(measure(flags, args))
            print(f"round {round_index} {label}: {json.dumps(runs[label][-1])}", flush=True)
    summary = summarise(sets, runs)
    print(json.dumps({"env": args.env, "backend": args.backend, "num_envs": args.num_envs, "horizon": args.horizon,
                      "rounds": args.rounds, "runs": runs, "summary": summary}, indent=2))
    print(table(sets, summary))


if __name__ == "__main__":
    main()
