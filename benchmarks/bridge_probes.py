"""P Jacobian probes through a bridged simulator: one recompute (batched cotangents) against P recomputes.

``mb.vector_jacobian_products`` asks for ``P`` probes with ``is_grads_batched``; a bridge built on
``mb.ExternalFunction`` with a ``batched_vjp`` answers them with one recompute of the step (the warp cloth:
one forward loop, then ``P`` adjoint loops). The baseline is the same call forced onto its loop (``P``
backward passes, each recomputing the step). Measured in one run on the warp cloth, interleaved, best of
``--repeats``; prints the time of each and the ratio loop / batched (> 1: batching is faster).

Run: ``python benchmarks/bridge_probes.py --probes 8 --envs 64 --substeps 16``.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import mbmix_fw as mb
from mbmix_fw.maths import probes as probes_module  # the loop switch is private: benchmark only
from mbmix_warp import ClothFoldConfig, make_cloth_fold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--substeps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = make_cloth_fold(ClothFoldConfig(num_envs=args.envs, grid_size=args.grid, substeps=args.substeps),
                          mb.BuildContext.cpu())
    g = torch.Generator().manual_seed(0)
    state = env.reset(args.envs, g)
    action = 0.5 * torch.randn(args.envs, env.action_dim, generator=g)
    u = mb.random_unit_vectors(args.envs, args.probes, env.state_dim, g)

    def probe():
        return mb.vector_jacobian_products(env, state, action, u)

    def looped_probe():
        probes_module._UNBATCHABLE.add(type(env))
        try:
            return probe()
        finally:
            probes_module._UNBATCHABLE.discard(type(env))

    torch.testing.assert_close(looped_probe(), probe(), rtol=1e-4, atol=1e-5)  # the same probes either way
    times = {"batched": [], "loop": []}
    for _ in range(args.repeats):  # interleaved: both see the same machine load
        for name, fn in (("batched", probe), ("loop", looped_probe)):
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    batched, looped = min(times["batched"]), min(times["loop"])
    result = {"envs": args.envs, "grid": args.grid, "substeps": args.substeps, "probes": args.probes,
              "batched_s": round(batched, 5), "loop_s": round(looped, 5)}
    print(json.dumps(result))
    print(f"P={args.probes} probes: loop (P recomputes) / batched (one recompute) = {looped / batched:.2f}")


if __name__ == "__main__":
    main()
