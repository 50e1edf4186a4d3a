"""Every GPU figure of issue 17 in one command: the CUDA tests and the measurements, one JSON and one table.

On a CUDA machine (budget: under 8 minutes), in this order, each in its own subprocess with a time limit:

1. ``pytest -m cuda tests/test_cuda.py``: cloth and Brax gradient checks and a short training run on CUDA;
2. cloth forward+backward throughput, particle-substeps per second (8×8 and 32×32 cloths, 1024 and 4096
   envs, 16 substeps) — goal ≥ 5e8 (8×8) and ≥ 2e9 (32×32) at 1024 envs;
3. ``benchmarks/gpu_loop.py``: a whole SHAC iteration against the bare actor window at 64 and 4096
   envs — goal ≥ 0.5;
4. one MB-MIX iteration against one SHAC iteration (``pendulum_mbmix`` and ``pendulum_shac`` recipes, same
   envs), as iterations per second and their ratio;
5. ``benchmarks/brax_bridge.py``: the Brax bridge against pure JAX on ant, 2048 envs, H = 32 — goal ≥ 0.9.

It writes ``gpu_suite.json`` (machine, versions, commit, every result) and ``gpu_suite.md`` (the same as
one markdown table, ready for ``benchmarks/RESULTS.md``) into ``--out``. A step that fails or runs out of
time is recorded as such and the suite goes on.

``--dry-run`` runs the same path at tiny sizes on the CPU (CI runs it, under a minute): the CUDA tests are
collected and skip, Brax is left out (it compiles for minutes on a CPU; ``--with-brax`` adds it).

Run: ``python benchmarks/gpu_suite.py --out gpu_suite_out`` (GPU) or ``--dry-run`` (anywhere).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FULL = {"cloth": {"grids": [8, 32], "envs": [1024, 4096], "substeps": 16, "steps": 5},
        "gpu_loop": {"envs": [64, 4096], "iterations": 5},
        "mbmix_vs_shac": {"envs": 1024, "iterations": 3, "overrides": []},
        "brax": {"env": "ant", "envs": 2048, "horizon": 32}}
DRY = {"cloth": {"grids": [4], "envs": [2], "substeps": 6, "steps": 1},
       "gpu_loop": {"envs": [8], "iterations": 1},
       "mbmix_vs_shac": {"envs": 8, "iterations": 1,
                         "overrides": [["estimator.horizon", 4], ["critic.iterations", 1]]},
       "brax": {"env": "reacher", "envs": 4, "horizon": 2}}


def run(cmd: list[str], timeout: float) -> dict:
    """A subprocess with the checkout first on the path; its exit code, time and output tail."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins"),
                                                          os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        status, out = ("ok" if done.returncode == 0 else f"failed (exit {done.returncode})"), done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        status, out = f"timed out after {timeout:.0f} s", (expired.stdout or b"").decode(errors="replace")
    return {"status": status, "seconds": round(time.perf_counter() - started, 1), "tail": out[-2000:]}


# ---------------------------------------------------------------- measurements run in a child process
def cloth_throughput(device: str, grid: int, envs: int, substeps: int, steps: int) -> dict:
    """Forward+backward particle-substeps per second of the warp cloth (one differentiable step at a time)."""
    import torch

    import mbmix_fw as mb
    from mbmix_warp import ClothFoldConfig, make_cloth_fold

    env = make_cloth_fold(ClothFoldConfig(num_envs=envs, grid_size=grid, substeps=substeps),
                          mb.BuildContext(device=device))
    state = env.reset(envs, torch.Generator(device=device).manual_seed(0))
    action = torch.zeros(envs, env.action_dim, device=device)

    def once():
        x = state.clone().requires_grad_(True)
        env.step(x, action).sum().backward()
        x.grad.sum().item()  # wait for the device

    once()
    started = time.perf_counter()
    for _ in range(steps):
        once()
    seconds = (time.perf_counter() - started) / steps
    return {"grid": grid, "envs": envs, "substeps": substeps,
            "particle_substeps_per_s": envs * grid * grid * substeps / seconds}


MBMIX_OVERRIDES = {"full": [["scheduler.warmup_iterations", 0]],
                   "dry": [["scheduler.warmup_iterations", 0], ["scheduler.model_fit_steps", 2],
                           ["scheduler.model_branches", 8]]}
"""MB-MIX's own overrides: no model-free warm-up (the timed iterations must use the model)."""


def iterations_per_s(device: str, recipe: str, envs: int, iterations: int, overrides: list) -> float:
    """Whole trainer iterations per second of a recipe (after one warm-up iteration)."""
    import torch

    import mbmix_fw as mb
    from mbmix_fw.building.build import make_trainer, resolve_device

    registry = mb.default_registry()
    recipe_ = mb.load_recipe(REPO / "recipes" / f"{recipe}.toml", registry,
                             [("env.num_envs", envs), ("run.iterations", 1000), *map(tuple, overrides)])
    dev = resolve_device(device)
    trainer = make_trainer(recipe_, None, dev, registry, progress=False)
    plan = lambda i: trainer.scheduler.plan(i, recipe_.run.iterations)  # noqa: E731
    trainer._read_metrics(trainer._iterate(plan(0)))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    started = time.perf_counter()
    for i in range(iterations):
        trainer._read_metrics(trainer._iterate(plan(1 + i)))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return iterations / (time.perf_counter() - started)


def child(args) -> None:
    """``--child WHAT JSON``: one measurement, printed as one JSON line."""
    what, params = args.child[0], json.loads(args.child[1])
    if what == "cloth":
        print(json.dumps(cloth_throughput(args.device, **params)))
    elif what == "mbmix_vs_shac":
        own = MBMIX_OVERRIDES["dry" if args.device == "cpu" else "full"]
        mbmix = iterations_per_s(args.device, "pendulum_mbmix", params["envs"], params["iterations"],
                                 params["overrides"] + own)
        shac = iterations_per_s(args.device, "pendulum_shac", params["envs"], params["iterations"], params["overrides"])
        print(json.dumps({"envs": params["envs"], "mbmix_iterations_per_s": mbmix, "shac_iterations_per_s": shac,
                          "ratio_mbmix_over_shac": mbmix / shac}))


def last_json(tail: str) -> dict | None:
    for line in reversed(tail.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


# ---------------------------------------------------------------- the suite
def machine(device: str) -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "device": device}
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    for package in ("torch", "jax", "jaxlib", "brax", "warp-lang"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    info["commit"] = commit.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")
    return info


def suite(args) -> dict:
    sizes = DRY if args.dry_run else FULL
    device = "cpu" if args.dry_run else "cuda"
    me = [sys.executable, str(Path(__file__).resolve()), "--device", device]
    results: dict = {"machine": machine(device), "dry_run": args.dry_run, "steps": {}}
    steps = results["steps"]

    tests = run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_cuda.py"],
                timeout=240)
    summary = re.findall(r"(\d+) (passed|failed|skipped|error)", tests["tail"])
    steps["cuda_tests"] = {**tests, "counts": {kind: int(n) for n, kind in summary}}

    c = sizes["cloth"]
    for grid in c["grids"]:
        for envs in c["envs"]:
            params = {"grid": grid, "envs": envs, "substeps": c["substeps"], "steps": c["steps"]}
            step = run([*me, "--child", "cloth", json.dumps(params)], timeout=90)
            steps[f"cloth_{grid}x{grid}_{envs}"] = {**step, "result": last_json(step["tail"])}

    g = sizes["gpu_loop"]
    loop = run([sys.executable, "benchmarks/gpu_loop.py", "--device", device, "--iterations", str(g["iterations"]),
                "--envs", *map(str, g["envs"])], timeout=150)
    ratios = {int(n): float(r) for n, r in re.findall(r"at (\d+) envs: ([\d.]+)x", loop["tail"])}
    steps["gpu_loop"] = {**loop, "result": {"shac_over_bare": ratios} if ratios else None}

    m = sizes["mbmix_vs_shac"]
    step = run([*me, "--child", "mbmix_vs_shac", json.dumps(m)], timeout=120)
    steps["mbmix_vs_shac"] = {**step, "result": last_json(step["tail"])}

    if not args.dry_run or args.with_brax:
        b = sizes["brax"]
        step = run([sys.executable, "benchmarks/brax_bridge.py", "--env", b["env"], "--num-envs", str(b["envs"]),
                    "--horizon", str(b["horizon"]), "--device", device], timeout=240)
        ratio = re.search(r"bridged \(fused\) / pure JAX diff-steps/s: ([\d.]+)", step["tail"])
        steps["brax_bridge"] = {**step, "result": {"env": b["env"], "envs": b["envs"], "horizon": b["horizon"],
                                                   "bridged_over_pure_jax": float(ratio.group(1))} if ratio else None}
    else:
        steps["brax_bridge"] = {"status": "skipped (dry run: Brax compiles for minutes on a CPU; --with-brax)"}
    return results


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"GPU suite{' (dry run, CPU, tiny sizes)' if results['dry_run'] else ''}: "
             f"{m.get('gpu', m['platform'])}; commit {m['commit']}; torch {m['torch']}, jax {m['jax']}, "
             f"brax {m['brax']}, warp {m['warp-lang']}", "",
             "| step | status | seconds | result | goal |", "|---|---|---|---|---|"]
    goals = {"cloth_8x8_1024": "≥ 5e8", "cloth_32x32_1024": "≥ 2e9", "gpu_loop": "≥ 0.5 (4096 envs)",
             "brax_bridge": "≥ 0.9", "cuda_tests": "all pass"}
    for name, step in results["steps"].items():
        result = step.get("result") or step.get("counts")
        if result and "particle_substeps_per_s" in result:
            shown = f"{result['particle_substeps_per_s']:.3g} particle-substeps/s"
        elif result:
            shown = ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in result.items())
        else:
            shown = ""
        lines.append(f"| {name} | {step['status']} | {step.get('seconds', '')} | {shown} | {goals.get(name, '')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (CI)")
    parser.add_argument("--with-brax", action="store_true", help="also run the Brax step in a dry run")
    parser.add_argument("--out", default="gpu_suite_out", help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("gpu_suite: no CUDA device here; use --dry-run to exercise the suite on the CPU")
    started = time.perf_counter()
    results = suite(args)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_suite.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (out / "gpu_suite.md").write_text(table)
    print(table)
    print(f"wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.md'} in {results['total_seconds']} s")


if __name__ == "__main__":
    main()
