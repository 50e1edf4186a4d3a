"""Fit cost of ``particle_gnn`` per transition against ``sobolev_mlp``'s, this checkout against another
(``--baseline``), in one run.

One fit step (statistics, Sobolev loss with its Jacobian term, backward, AdamW) on cloth transitions (8×8,
the recipe's physics, one Jacobian probe each) at each model's batch size: ``sobolev_mlp`` with
``recipes/cloth_mix.toml``'s settings (batch 128), ``particle_gnn`` with its defaults and with α = 0 (plain
MSE). Time per transition is the best of ``--repeats`` blocks of ``--steps`` fit steps, in CPU time of the
(one-threaded) process: on a shared machine it moves far less with the others' load than wall time; ``× mlp`` is
the ratio to ``sobolev_mlp``'s measured in the same process. With ``--baseline DIR`` the same measurement runs
in a subprocess importing the code from ``DIR`` (e.g. ``git worktree add /tmp/base <commit>``), interleaved
with ours over ``--rounds`` rounds (best of each), and the ratio baseline / ours of the particle model's
cost is printed last (> 1: ours is cheaper).

``--profile`` prints torch.profiler's per-op table of three ``particle_gnn`` fit steps instead.

Run: ``OMP_NUM_THREADS=1 python benchmarks/particle_fit_cost.py --baseline /tmp/base`` (about a minute).
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


def _models(particle_fields: dict):
    import torch

    import mbmix_fw as mb
    from mbmix_world_models import ParticleGNNConfig, SobolevConfig, make_particle_gnn, make_sobolev
    from mbmix_warp import ClothFold, ClothFoldConfig

    torch.set_num_threads(1)
    ctx = mb.BuildContext.cpu(seed=0)
    env = ClothFold(ClothFoldConfig(num_envs=8, grid_size=8, episode_length=40, substeps=8), ctx)
    ctx = ctx.with_env(env)
    generator = torch.Generator().manual_seed(0)
    state = env.reset(128, generator)
    with torch.no_grad():
        for _ in range(5):  # moving cloths, some particles off the ground
            state = env.step(state, torch.rand(128, env.action_dim, generator=generator) * 2 - 1)
    action = torch.rand(128, env.action_dim, generator=generator) * 2 - 1
    data = mb.collect_transitions(env, state, action, 1, generator)
    models = {
        "sobolev_mlp": make_sobolev(SobolevConfig(hidden=[256, 256], probes=1, batch_size=128), ctx),
        "particle_gnn": make_particle_gnn(ParticleGNNConfig(**particle_fields), ctx),
        "particle_gnn α=0": make_particle_gnn(ParticleGNNConfig(**{**particle_fields, "alpha_s": 0.0,
                                                                   "alpha_a": 0.0}), ctx),
    }
    batches = {name: mb.TransitionBatch(*(v[:model.batch_size] for v in (
        data.state, data.action, data.next_state, data.probe_u, data.probe_s, data.probe_a)))
        for name, model in models.items()}
    return models, batches


def measure(steps: int, repeats: int, particle_fields: dict) -> dict:
    models, batches = _models(particle_fields)
    out = {}
    for _ in range(repeats):  # the models interleaved: each block of one sees the load the others saw
        for name, model in models.items():
            batch = batches[name]
            model.fit(batch)
            started = time.process_time()
            for _ in range(steps):
                model.fit(batch)
            per_transition = (time.process_time() - started) / (steps * len(batch)) * 1e3
            out[name] = min(out.get(name, float("inf")), per_transition)
    return out


def profile(particle_fields: dict) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    models, batches = _models(particle_fields)
    model, batch = models["particle_gnn"], batches["particle_gnn"]
    model.fit(batch)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            model.fit(batch)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", default=None, help="a checkout to compare against")
    parser.add_argument("--profile", action="store_true", help="print the per-op profile of particle_gnn's fit")
    parser.add_argument("--particle-set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="particle_gnn config fields (ours only), e.g. hidden=8")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the subprocess mode
    args = parser.parse_args()
    fields = {k: eval(v, {}) for k, v in (item.split("=", 1) for item in args.particle_set)}
    if args.profile:
        profile(fields)
        return
    if args.json:
        print(json.dumps(measure(args.steps, args.repeats, fields)))
        return
    results: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for who, root, extra in (("ours", REPO, args.particle_set), ("baseline", args.baseline, [])):
            if root is None:
                continue
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(Path(root) / "plugins")]),
                   "OMP_NUM_THREADS": "1"}
            command = [sys.executable, __file__, "--json", "--steps", str(args.steps), "--repeats",
                       str(args.repeats), *(["--particle-set", *extra] if extra else [])]
            run = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
            got = json.loads(run.stdout.strip().splitlines()[-1])
            best = results.setdefault(who, got)
            for name, value in got.items():
                best[name] = min(best[name], value)
    for who, row in results.items():
        mlp = row["sobolev_mlp"]
        cells = (f"{name}: {ms:.3f} CPU ms/tr ({ms / mlp:.2f}× mlp)" for name, ms in row.items())
        print(f"{who:<9} " + "  ".join(cells))
    if "baseline" in results:
        ours, base = results["ours"], results["baseline"]
        print(f"baseline / ours, particle_gnn: {base['particle_gnn'] / ours['particle_gnn']:.2f}; "
              f"α = 0: {base['particle_gnn α=0'] / ours['particle_gnn α=0']:.2f}; "
              f"× mlp {base['particle_gnn'] / base['sobolev_mlp']:.2f} -> "
              f"{ours['particle_gnn'] / ours['sobolev_mlp']:.2f}")


if __name__ == "__main__":
    main()
