"""Host time per substep of the warp cloth step, this checkout against another (``--baseline``), in one run.

At a tiny cloth (1 env, 4×4 particles) the kernels cost microseconds, so the wall time of a step is the host's:
argument packing, launches, allocations and memsets. Measured for the forward (no autograd) and for
forward+backward of one differentiable step, divided by ``substeps``; best of ``--repeats`` blocks of
``--steps`` steps. With ``--baseline DIR`` the same measurement runs in a subprocess importing the plugins
from ``DIR`` (e.g. a ``git worktree`` of the previous commit), interleaved with ours, and the ratio
baseline / ours is printed last (> 1: ours spends less host time).

Run: ``git worktree add /tmp/base <commit> && python benchmarks/cloth_host_time.py --baseline /tmp/base``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(substeps: list[int], steps: int, repeats: int, grid: int) -> dict:
    import torch

    import mbmix_fw as mb
    from mbmix_warp import ClothFoldConfig, make_cloth_fold

    torch.set_num_threads(1)
    out = {}
    for s in substeps:
        env = make_cloth_fold(ClothFoldConfig(num_envs=1, grid_size=grid, substeps=s), mb.BuildContext.cpu())
        state = env.reset(1, torch.Generator().manual_seed(0))
        action = torch.zeros(1, env.action_dim)

        def forward():
            with torch.no_grad():
                for _ in range(steps):
                    env.step(state, action)

        def backward():
            x = state.clone().requires_grad_(True)
            for _ in range(steps):
                env.step(x, action).sum().backward()

        row = {}
        for name, fn in (("forward", forward), ("forward_backward", backward)):
            fn()
            best = min(_timed(fn) for _ in range(repeats))
            row[name] = best / (steps * s) * 1e6
        out[str(s)] = row
    return out


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--substeps", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--grid", type=int, default=4)
    parser.add_argument("--baseline", default=None, help="a checkout to compare against")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the subprocess mode
    args = parser.parse_args()
    sizes = dict(substeps=args.substeps, steps=args.steps, repeats=args.repeats, grid=args.grid)
    if args.json:
        print(json.dumps(measure(**sizes)))
        return
    results = {"ours": {}, "baseline": {}}
    rounds = 2 if args.baseline else 1
    for _ in range(rounds):  # interleaved, best of both rounds: the two see the same machine load
        for who, root in (("ours", REPO), ("baseline", args.baseline)):
            if root is None:
                continue
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(Path(root) / "plugins")]),
                   "OMP_NUM_THREADS": "1"}
            run = subprocess.run([sys.executable, __file__, "--json", *sum(
                ([f"--{k}", *map(str, v if isinstance(v, list) else [v])] for k, v in sizes.items()), [])],
                capture_output=True, text=True, env=env, check=True)
            got = json.loads(run.stdout.strip().splitlines()[-1])
            for s, row in got.items():
                best = results[who].setdefault(s, row)
                for k, v in row.items():
                    best[k] = min(best[k], v)
    print(json.dumps(results, indent=2))
    for s, row in results["ours"].items():
        line = f"substeps {s}: host µs/substep forward {row['forward']:.1f}, forward+backward {row['forward_backward']:.1f}"
        if args.baseline:
            base = results["baseline"][s]
            line += (f"; baseline {base['forward']:.1f}, {base['forward_backward']:.1f}; ratio baseline/ours "
                     f"{base['forward'] / row['forward']:.2f}, {base['forward_backward'] / row['forward_backward']:.2f}")
        print(line)


if __name__ == "__main__":
    main()
