"""Every GPU figure of benchmarks/RESULTS.md in one command: the CUDA tests, the measurements and the H_max
learning study, one JSON and one markdown table.

Why one script: a lent machine gives 15 minutes in all, start-up and transfers included, so everything is
prepared here, run as one command, and written to one place; nothing has to be decided on the machine.

On a CUDA machine, in this order, each in its own subprocess with a time limit (times: the plan for an H100;
**estimates, not measurements** — no GPU has been lent to the project yet; see "How the times were planned"):

====  =========================================================================================  ==========
part  what                                                                                       planned
====  =========================================================================================  ==========
1     ``pytest -m cuda tests/project/test_cuda.py``: cloth and Brax gradient checks and a short training    60–120 s
      run on CUDA (warp and XLA compile cold on a fresh machine)
2     cloth forward+backward throughput, particle-substeps per second (8×8 and 32×32 cloths,         ~60 s
      1024 and 4096 envs, 16 substeps) — goal ≥ 5e8 (8×8) and ≥ 2e9 (32×32) at 1024 envs
3     ``benchmarks/gpu_loop.py``: a whole SHAC iteration against the bare actor window at 64 and     ~30 s
      4096 envs — goal ≥ 0.5
4     one MB-MIX iteration against one SHAC iteration (``pendulum_mbmix`` and ``pendulum_shac``,      ~30 s
      same envs), as iterations per second and their ratio
5     ``benchmarks/brax_bridge.py``: the Brax bridge against pure JAX on ant, 2048 envs, H = 32 —    60–120 s
      goal ≥ 0.9 (compilation dominates; one window is ~0.7 s at the reference's 97.6k steps/s)
6     the seed's H_max sweep: SHAC (``recipes/ant_shac.toml``) and MB-MIX (``recipes/ant_mbmix.toml``)  300 s
      on Brax ant at its shipped size (128 envs, 1000-step episodes); H_max ∈ {16, 32, 48, 64, 96};  (the rest)
      every run ``mbmix-fw run RECIPE --set ...``
7     **its own call** (``--newton-hmax``): the same sweep on the Newton ant at its GPU size            ≤ 180 s
      (``recipes/ant_newton_{shac,mbmix}.toml``, 256 envs); see "Part 7" below
====  =========================================================================================  ==========

The whole suite has a budget (``--budget``, default 540 s = 9 minutes; 15 s of it kept to write the files).
Parts 1–5 run first; each one's time limit is cut so that part 6 keeps 300 s (``LEARNING_RESERVE_S``), and
part 6 spends whatever is left. A step that fails or runs out of time is recorded as such and the suite goes
on; the files are written whatever happens.

Part 6, the H_max study. Every run of a backend spends the same env steps, ``envs × 192 × 4`` (192 is the
least common multiple of the H_max values, so each H_max takes whole iterations: Brax 98 304 env steps = 48
iterations at H = 16, 8 at H = 96), evaluated four times at equal env-step spacing on the recipe's episodes;
MB-MIX's model-free warm-up is the first quarter of those env steps, so every H_max fits its model as long
before using it. A run's score is the mean of its last 3 evaluations (as in ``learning_study.py``); each
(backend, method, H_max) is summarised as the IQM over seeds with ``mb.summarize_scores``'s 95 % stratified
bootstrap interval, and the table adds each method's worst H_max (the seed's robustness claim). Runs go 8 at
a time on the one GPU (2 CPU threads each), **seed-major**: all of seed 0 (Brax, then Newton) before any of
seed 1, so a budget that runs out leaves whole seeds. A run starts only while the time left exceeds the
longest run so far, and is stopped at the deadline; the JSON records every run (finished, failed, stopped,
not started). Up to 5 seeds are planned; within 9 minutes expect at most seed 0 (plan below), so the table's
intervals are degenerate until a longer budget (``--budget``, or ``--runs`` reused by a second call on the
same warm machine: finished runs are not run again) buys more seeds. This is a short budget for ant: it
compares the window lengths' early learning at equal env steps, not final performance.

How the times were planned (estimates, from CPU timings and the published reference; re-plan from the first
real ``gpu_suite.json``, whose every step and run records its seconds). On the 2-core CPU sandbox a tiny Brax
ant run (2 envs, 8-step episodes, H = 2) took 164 s with a cold JAX cache and 63 s with the shared programs
cached, nearly all XLA compilation; a tiny MB-MIX one 202 s (its model's VJP probes compile more programs);
a tiny Newton ant run 16–18 s. On a GPU the same programs are compiled (by the 16-core host; the shared,
guarded JAX cache lets later runs load them), so a Brax run's start is planned at ~60 s (SHAC) and ~150 s
(MB-MIX) in the first wave and ~10–30 s after. Training: the H100 reference for pure-JAX ant is 97.6k
differentiable env-steps/s at 2048 envs (21 ms a step); at 128 envs a step is bound by latency, planned at
~10 ms forward+backward, so a run's 768 steps ≈ 8 s; four evaluations of 16 × 1000 forward steps at ~4 ms ≈
16 s; MB-MIX's model fits (16 steps with VJP probes per iteration) planned at 1.5–2× SHAC's training. Seed 0
is 20 runs, 8 at a time: the Brax ten ≈ 200–250 s (the first wave's MB-MIX compilation dominates), the Newton
ten (cold warp compilation ~60 s, then short runs) ≈ 100 s. So the 300 s reserve is planned to finish Brax's
seed 0 and part of Newton's; a second call with the same ``--runs`` (``--budget`` to taste) completes it.

It writes ``gpu_suite.json`` (machine, versions, commit, every result, every run of the study) and
``gpu_suite.md`` (the same as markdown tables, ready for ``benchmarks/RESULTS.md``) into ``--out``.

``--dry-run`` runs the same path at tiny sizes on the CPU (CI runs it: about 50 s on 2 cores, the study
~30 s of it; 315 s with ``--with-learning brax``): the CUDA tests are collected and skip; the bridge
measurement leaves Brax out (``--with-brax`` adds it); the study runs on a pendulum stand-in (2 envs,
H ∈ {2, 4}) and on the Newton ant (2 envs, H = 2) when ``newton`` is installed, and skips Brax ant (it
compiles for minutes on a CPU; ``--with-learning brax`` adds it), after validating every full-size run's
recipe and settings.

The command on a lent machine. Its image has Python 3.12 with torch 2.11 and jax 0.11.2 (CUDA), pytest,
flax, optax, scipy, matplotlib, tensorboard, but not pydantic, brax, mujoco, warp-lang or newton: those travel
as cp312 wheels (``--no-deps``: each dependency the code imports is named). mbmix-fw itself travels as a wheel
built here, which registers the plugins' entry points (the suite puts the checkout first on the path, so the
code that runs is the checkout's; hatchling is needed only here, to build it). Here, once, in the repository
root::

    echo /.whl/ >> .git/info/exclude
    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 -d /tmp/wheels \\
        pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \\
        brax==0.14.2 jaxopt==0.8.5 trimesh==5.2.0 mujoco==4.0.1 mujoco-core==4.0.1 mujoco-studio==4.0.1 \\
        mujoco-mjx==3.17.0 glfw==2.11.0 warp-lang==1.19.0 newton==1.8.0
    pip wheel --no-deps --no-build-isolation -w /tmp/wheels .
    tar -C /tmp -cf /tmp/wheels.tar wheels && split -n 4 -d /tmp/wheels.tar /tmp/wheels.tar.
    for i in 0 1 2 3; do mkdir -p .whl/$i && mv /tmp/wheels.tar.0$i .whl/$i/; done

The wheels come to ~190 MB (warp-lang alone is 149 MB), over the 64 MiB one call can carry, so they travel in
four quarters, one call each, each call following the last within the machine's 30 s warm time:

1. calls 1–4, carrying ``.whl/0`` … ``.whl/3`` in turn: ``cp .whl/*/wheels.tar.* /tmp/``; the fourth adds
   ``&& cat /tmp/wheels.tar.0? | tar -C /tmp -xf - && python3 -m pip install -q --no-index --no-deps
   --no-compile --target /tmp/site /tmp/wheels/*.whl`` (~1 minute: start-up, then ~15 s a call, planned);
2. call 5, ``timeout_s=600`` (the suite's 540 s and a margin)::

       export PYTHONPATH=$PWD:$PWD/plugins:/tmp/site PYTHONUNBUFFERED=1 &&
       python3 benchmarks/gpu_suite.py --out $OUT --runs /tmp/gpu_runs

``--runs`` keeps the study's run folders out of ``$OUT``, which brings back at most 8 files; ``$OUT`` gets
``gpu_suite.json`` and ``gpu_suite.md``. In all ~12 of the lease's 15 minutes (planned). Not yet tried on the
image: brax 0.14.2 with its jax 0.11.2 (tested here with jax 0.10.2); the entry points of a ``--target``
install were checked here (``importlib.metadata`` finds them on ``PYTHONPATH``).

Part 7, the Newton ant's H_max sweep (``--newton-hmax``, section "the Newton ant's H_max sweep" below). A
call of its own, after the suite's, on the same warm machine (``timeout_s=240``)::

    export PYTHONPATH=$PWD:$PWD/plugins:/tmp/site PYTHONUNBUFFERED=1 &&
    python3 benchmarks/gpu_suite.py --newton-hmax --out $OUT --runs /tmp/gpu_runs

It writes ``newton_hmax.json`` and ``newton_hmax.md`` (not the suite's files) within ``--newton-budget``
(default 180 s, 10 s of it kept to write them). Sizes: 256 ants (the recipes' GPU size), ``256 × 192``
env steps per run (49 152: 12 iterations at H = 16, 2 at H = 96), 4 evaluations on the recipes' 8 episodes,
MB-MIX's warm-up the first quarter, runs 8 at a time, seed-major, the same study code as part 6. Planned
(**estimates**: the Newton bridge has not run on a GPU; on CUDA it launches kernels one by one, about 200
launches a step forward and 400 forward+backward, planned at ~15 ms an env step): warp compiles Newton's
CUDA kernels cold in the first wave (~60 s, 16 host cores), then a run is ~192 steps × 15 ms ≈ 3 s of
training plus its evaluations (untrained ants fall within ~30 steps, so episodes are short) and start-up;
so the 180 s are planned to finish seed 0 (10 runs) and part of seed 1. A second call with the same
``--runs`` adds seeds (finished runs are reused).

Dry run anywhere: ``python benchmarks/gpu_suite.py --dry-run --out DIR`` (part 7 included, at 2 envs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # study_jobs, a sibling module
from study_jobs import finished  # noqa: E402

FULL = {"cloth": {"grids": [8, 32], "envs": [1024, 4096], "substeps": 16, "steps": 5},
        "gpu_loop": {"envs": [64, 4096], "iterations": 5},
        "mbmix_vs_shac": {"envs": 1024, "iterations": 3, "overrides": []},
        "brax": {"env": "ant", "envs": 2048, "horizon": 32}}
DRY = {"cloth": {"grids": [4], "envs": [2], "substeps": 6, "steps": 1},
       "gpu_loop": {"envs": [8], "iterations": 1},
       "mbmix_vs_shac": {"envs": 8, "iterations": 1,
                         "overrides": [["estimator.horizon", 4], ["critic.iterations", 1]]},
       "brax": {"env": "reacher", "envs": 4, "horizon": 2}}

HMAX = [16, 32, 48, 64, 96]
"""The seed's window-length sweep. Their least common multiple, 192, sets the env-step unit, so every H_max
spends the same env steps in whole iterations."""
LEARNING = {
    "full": {
        "horizons": HMAX, "unit": 192, "units": 4, "evaluations": 4, "seeds": 5, "jobs": 8,
        "backends": {
            "brax": {"label": "Brax ant, 128 envs", "needs": ("jax", "brax", "mujoco"), "envs": 128, "sets": [],
                     "recipes": {"shac": "recipes/ant_shac.toml", "mbmix": "recipes/ant_mbmix.toml"}}}},
    "dry": {
        "horizons": [2, 4], "unit": 4, "units": 2, "evaluations": 2, "seeds": 1, "jobs": 2,
        "backends": {
            # the same code path on a toy env: Brax and Newton compile for minutes on a CPU
            "toy": {"label": "pendulum (the dry run's stand-in)", "needs": (), "envs": 2,
                    "sets": ["env.episode_length=8", "run.eval_envs=2", "critic.iterations=1"],
                    "recipes": {"shac": "recipes/pendulum_shac.toml", "mbmix": "recipes/pendulum_mbmix.toml"}},
            "brax": {"label": "Brax ant, 2 envs", "needs": ("jax", "brax", "mujoco"),
                     "envs": 2, "sets": ["env.episode_length=8", "run.eval_envs=2", "critic.iterations=1"],
                     "recipes": {"shac": "recipes/ant_shac.toml", "mbmix": "recipes/ant_mbmix.toml"}}}},
}
"""The H_max study's sizes (part 6). Full: the recipe at its GPU size (Brax ant 128 envs as shipped), episodes
of 1000 steps, ``envs × unit × units`` env steps per run (128 × 192 × 4 = 98 304: 48 iterations at H = 16,
8 at H = 96), four evaluations on the recipe's 16 episodes. Dry: 2 envs, 8-step episodes, H ∈ {2, 4}. The
Newton ant's sweep is part 7 (``NEWTON_HMAX``)."""
MBMIX_STUDY_SETS = {"full": [], "dry": ["scheduler.warmup_env_steps=0", "scheduler.model_fit_steps=2",
                                         "scheduler.model_branches=2", "world_model.batch_size=8"]}
"""MB-MIX's own settings in the study beyond the recipe's (whose warm-up the study sets to the first quarter of
the env steps, so every H_max fits its model for as long before using it); the smallest model work in the dry
run."""


def run(cmd: list[str], timeout: float, **extra_env: str) -> dict:
    """A subprocess with the checkout first on the path; its exit code, time and output tail."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins"),
                                                          os.environ.get("PYTHONPATH", "")]), **extra_env}
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


# ---------------------------------------------------------------- the H_max study
def importable(modules) -> bool:
    """Whether every module is installed (found, not imported: importing JAX or warp here would touch the GPU)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in modules)


def learning_jobs(sizes: dict, mode: str) -> tuple[list[dict], dict]:
    """Every run of the study, seed-major (all of seed 0 before any of seed 1, so a budget that runs out leaves
    whole seeds), and the backends left out because their extra is not installed."""
    skipped, runs = {}, []
    backends = {}
    for name, backend in sizes["backends"].items():
        if "skip" in backend:
            skipped[name] = backend["skip"]
        elif importable(backend["needs"]):
            backends[name] = backend
        else:
            skipped[name] = f"skipped (not importable: {', '.join(backend['needs'])})"
    for seed in range(sizes["seeds"]):
        for name, backend in backends.items():
            budget = backend["envs"] * sizes["unit"] * sizes["units"]
            for method, recipe in backend["recipes"].items():
                for horizon in backend.get("horizons", sizes["horizons"]):
                    sets = [f"env.num_envs={backend['envs']}", *backend["sets"], f"estimator.horizon={horizon}",
                            f"run.env_steps={budget}", "run.iterations=100000", "run.eval_every=0",
                            f"run.eval_every_env_steps={budget // sizes['evaluations']}",
                            "run.checkpoint_every=100000"]
                    if method == "mbmix":
                        sets += [f"scheduler.warmup_env_steps={budget // 4}", *MBMIX_STUDY_SETS[mode]]
                    runs.append({"backend": name, "method": method, "horizon": horizon, "seed": seed,
                                 "recipe": recipe, "sets": sets})
    return runs, skipped


def check_settings(sizes: dict, mode: str) -> list[str]:
    """Every run's recipe and ``--set`` overrides loaded and validated without training (``mb.load_recipe``):
    the dry run checks the full-size study's settings this way, so a setting that a recipe no longer takes
    fails in CI, not on the lent machine."""
    import mbmix_fw as mb
    from mbmix_fw.building.recipe import parse_override

    registry = mb.default_registry()
    problems = []
    jobs, _ = learning_jobs({**sizes, "seeds": 1}, mode)
    for job in jobs:
        try:
            mb.load_recipe(REPO / job["recipe"], registry, [parse_override(s) for s in job["sets"]])
        except Exception as error:  # noqa: BLE001 - every problem is reported, not only the first
            problems.append(f"{job['backend']} {job['method']} H={job['horizon']}: {error}")
    return problems


def learning_run(job: dict, root: Path, device: str, timeout: float, threads: int) -> dict:
    """One CLI training run (``mbmix-fw run RECIPE --set ...``, as a user runs it); its score is the mean of its
    last 3 evaluations (``learning_study.py``'s score), with its wall time and env steps."""
    import csv

    out = root / f"{job['backend']}_{job['method']}_H{job['horizon']}_s{job['seed']}"
    cmd = [sys.executable, "-m", "mbmix_fw", "run", str(REPO / job["recipe"]), "--out", str(out), "--no-progress",
           "--device", device, "--set", f"run.seed={job['seed']}", *(x for s in job["sets"] for x in ("--set", s))]
    metrics = out / "metrics.csv"
    if finished(out):  # a run finished by an earlier call with the same --runs
        step = {"status": "ok", "seconds": 0.0, "tail": "reused"}
    else:
        shutil.rmtree(out, ignore_errors=True)  # a run stopped part-way starts over
        step = run(cmd, timeout, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    record = {k: job[k] for k in ("backend", "method", "horizon", "seed")}
    record.update(status=step["status"], seconds=step["seconds"], reused=step["tail"] == "reused")
    if step["status"] != "ok" or not metrics.exists():
        return {**record, "tail": step["tail"][-800:]}
    rows = list(csv.DictReader(metrics.open()))
    evals = [float(r["eval/return"]) for r in rows if r.get("eval/return") and int(r["iteration"]) > 0]
    if not evals:
        return {**record, "status": "failed (no evaluation after iteration 0)", "tail": step["tail"][-800:]}
    return {**record, "score": sum(evals[-3:]) / len(evals[-3:]), "evaluations": evals,
            "env_steps": float(rows[-1]["env/steps"])}


def learning_study(sizes: dict, mode: str, device: str, deadline: float, root: Path) -> dict:
    """The H_max sweep: runs ``jobs`` at a time on the one device until ``deadline``. A run starts only while
    the time left exceeds the longest run seen so far (a run that could not finish is not started), and is
    stopped at the deadline; the table summarises the runs that finished, per (backend, method, H_max), as the
    IQM over their seeds with ``mb.summarize_scores``'s 95 % interval."""
    import concurrent.futures
    import threading

    import mbmix_fw as mb

    started = time.perf_counter()
    problems = check_settings(LEARNING["full"], "full") + check_settings(sizes, mode)
    if problems:
        return {"status": "failed (settings)", "seconds": round(time.perf_counter() - started, 1),
                "tail": "\n".join(problems)[-2000:], "summary": {}, "skipped_backends": {}, "runs": []}
    jobs, skipped = learning_jobs(sizes, mode)
    threads = max(1, (os.cpu_count() or 1) // sizes["jobs"])
    longest = {"s": 0.0}
    lock = threading.Lock()

    def one(job):
        left = deadline - time.perf_counter()
        with lock:
            need = longest["s"]
        if left <= max(need, 1.0):
            return {**{k: job[k] for k in ("backend", "method", "horizon", "seed")},
                    "status": f"not started ({left:.0f} s left, longest run {need:.0f} s)"}
        try:
            record = learning_run(job, root, device, left, threads)
        except Exception as error:  # noqa: BLE001 - one run's failure is recorded; the others go on
            record = {**{k: job[k] for k in ("backend", "method", "horizon", "seed")},
                      "status": f"failed ({type(error).__name__}: {error})", "seconds": 0.0, "tail": ""}
        with lock:
            longest["s"] = max(longest["s"], record["seconds"])
        return record

    with concurrent.futures.ThreadPoolExecutor(sizes["jobs"]) as pool:
        records = list(pool.map(one, jobs))
    done = [r for r in records if "score" in r]
    groups: dict = {}
    for r in done:
        groups.setdefault(f"{r['backend']}/{r['method']}/{r['horizon']}", []).append(r["score"])
    summary: dict = {}
    for key, s in mb.summarize_scores(groups).items():
        backend, method, horizon = key.split("/")
        summary.setdefault(backend, {}).setdefault(method, {})[horizon] = {
            "iqm": s.iqm, "low": s.low, "high": s.high, "seeds": s.runs}
    # a run stopped at the deadline, or never started, is the budget's doing, not a failure
    stopped = [r for r in records if r["status"].startswith(("timed out", "not started"))]
    failed = [r for r in records if r["status"] != "ok" and r not in stopped]
    status = (f"failed ({len(failed)} runs)" if failed else "no run finished" if not done else
              f"ok ({len(stopped)} runs stopped or not started: budget)" if stopped else "ok")
    labels = {name: backend["label"] for name, backend in sizes["backends"].items()}
    tail = "\n".join(f"{r['backend']} {r['method']} H={r['horizon']} seed {r['seed']}: {r['status']} "
                     f"{r.get('tail', '')[-300:]}" for r in failed)[-2000:]
    return {"status": status, "seconds": round(time.perf_counter() - started, 1), "tail": tail,
            "result": {"runs_finished": len(done), "runs_planned": len(records)}, "labels": labels,
            "skipped_backends": skipped, "summary": summary, "runs": records,
            "sizes": {k: v for k, v in sizes.items() if k != "backends"}}


def learning_markdown(study: dict) -> list[str]:
    """One table per backend: H_max down, methods across, IQM [95 % CI] (seeds), and each method's worst H."""
    lines = []
    for backend, methods in study["summary"].items():
        names = list(methods)
        lines += ["", f"H_max sweep, {study['labels'][backend]}: eval return, IQM [95 % CI] over seeds (seeds) of "
                  "each run's mean of its last 3 evaluations, equal env steps per H_max:",
                  "", "| H_max | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        horizons = sorted({int(h) for m in methods.values() for h in m})
        for h in horizons:
            cells = [methods[m].get(str(h)) for m in names]
            shown = [f"{c['iqm']:.2f} [{c['low']:.2f}, {c['high']:.2f}] ({c['seeds']})" if c else "—" for c in cells]
            lines.append(f"| {h} | " + " | ".join(shown) + " |")
        worst = [min(methods[m].items(), key=lambda kv: kv[1]["iqm"]) for m in names]
        lines.append("| worst | " + " | ".join(f"{c['iqm']:.2f} (H = {h})" for h, c in worst) + " |")
    for backend, why in study["skipped_backends"].items():
        lines += ["", f"H_max sweep, {study['labels'][backend]}: {why}"]
    return lines


# ---------------------------------------------------------------- the Newton ant's H_max sweep (part 7)
NEWTON_HMAX = {
    "full": {
        "horizons": HMAX, "unit": 192, "units": 1, "evaluations": 4, "seeds": 5, "jobs": 8,
        "backends": {
            "newton": {"label": "Newton ant, 256 envs", "needs": ("newton", "warp"), "envs": 256, "sets": [],
                       "recipes": {"shac": "recipes/ant_newton_shac.toml",
                                   "mbmix": "recipes/ant_newton_mbmix.toml"}}}},
    "dry": {
        "horizons": [2], "unit": 4, "units": 2, "evaluations": 2, "seeds": 1, "jobs": 2,
        "backends": {
            "newton": {"label": "Newton ant, 2 envs", "needs": ("newton", "warp"), "envs": 2,
                       "sets": ["env.episode_length=8", "run.eval_envs=2", "critic.iterations=1"],
                       "recipes": {"shac": "recipes/ant_newton_shac.toml",
                                   "mbmix": "recipes/ant_newton_mbmix.toml"}}}},
}
"""Part 7's sizes. Full: 256 ants (the Newton recipes' GPU size), 1000-step episodes, ``256 × 192`` env steps
per run (one unit: 12 iterations at H = 16, 2 at H = 96; a single unit is what fits 180 s, planned in the
module docstring), four evaluations on the recipes' 8 episodes. Dry: 2 ants, 8-step episodes, H = 2 (two
runs: CI pays for the path, not for a sweep)."""
NEWTON_BUDGET_S = 180.0
"""Part 7's default time (``--newton-budget``): ~3 minutes of a lent H100, 10 s of them to write the files."""


def newton_hmax(mode: str, device: str, deadline: float, root: Path) -> dict:
    """Part 7: the seed's H_max sweep on the Newton ant (SHAC and MB-MIX), with :func:`learning_study`'s
    runner, after validating the full-size runs' recipes and settings (so a dry run in CI catches a setting
    the Newton recipes no longer take)."""
    problems = check_settings(NEWTON_HMAX["full"], "full")
    if problems:
        return {"status": "failed (settings)", "seconds": 0.0, "tail": "\n".join(problems)[-2000:], "summary": {},
                "skipped_backends": {}, "runs": []}
    return learning_study(NEWTON_HMAX[mode], mode, device, deadline, root)


def newton_hmax_call(args, started: float) -> dict:
    """``--newton-hmax``: part 7 alone, in its own call on the lent machine (the suite's call has no time
    left for it); writes ``newton_hmax.json`` and ``newton_hmax.md``."""
    deadline = started + args.newton_budget - 10.0
    runs = Path(args.runs) if args.runs else Path(args.out) / "learning_runs"
    results = {"machine": machine("cuda"), "dry_run": False, "steps": {}}
    try:
        results["steps"]["newton_hmax"] = newton_hmax("full", "cuda", deadline, runs)
    except Exception:  # noqa: BLE001 - the files are written whatever happens
        import traceback

        results["steps"]["newton_hmax"] = {"status": "failed (suite error)", "tail": traceback.format_exc()[-2000:],
                                           "summary": {}, "skipped_backends": {}, "runs": []}
    return results


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


LEARNING_RESERVE_S = {"full": 300.0, "dry": 0.0}
"""Seconds kept for the H_max study: no earlier step's time limit reaches into them."""


def suite(args, started: float) -> dict:
    sizes = DRY if args.dry_run else FULL
    mode = "dry" if args.dry_run else "full"
    device = "cpu" if args.dry_run else "cuda"
    deadline = started + args.budget - 15.0  # 15 s to write the files

    def limit(own: float) -> float:
        """A step's time limit: its own, cut so that the H_max study keeps its reserve."""
        return max(30.0, min(own, deadline - LEARNING_RESERVE_S[mode] - time.perf_counter()))

    me = [sys.executable, str(Path(__file__).resolve()), "--device", device]
    results: dict = {"machine": machine(device), "dry_run": args.dry_run, "steps": {}}
    steps = results["steps"]

    tests = run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests/project/test_cuda.py"],
                timeout=limit(240))
    summary = re.findall(r"(\d+) (passed|failed|skipped|error)", tests["tail"])
    steps["cuda_tests"] = {**tests, "counts": {kind: int(n) for n, kind in summary}}

    c = sizes["cloth"]
    for grid in c["grids"]:
        for envs in c["envs"]:
            params = {"grid": grid, "envs": envs, "substeps": c["substeps"], "steps": c["steps"]}
            step = run([*me, "--child", "cloth", json.dumps(params)], timeout=limit(90))
            steps[f"cloth_{grid}x{grid}_{envs}"] = {**step, "result": last_json(step["tail"])}

    g = sizes["gpu_loop"]
    loop = run([sys.executable, "benchmarks/gpu_loop.py", "--device", device, "--iterations", str(g["iterations"]),
                "--envs", *map(str, g["envs"])], timeout=limit(150))
    ratios = {int(n): float(r) for n, r in re.findall(r"at (\d+) envs: ([\d.]+)x", loop["tail"])}
    steps["gpu_loop"] = {**loop, "result": {"shac_over_bare": ratios} if ratios else None}

    m = sizes["mbmix_vs_shac"]
    step = run([*me, "--child", "mbmix_vs_shac", json.dumps(m)], timeout=limit(120))
    steps["mbmix_vs_shac"] = {**step, "result": last_json(step["tail"])}

    if not args.dry_run or args.with_brax:
        b = sizes["brax"]
        step = run([sys.executable, "benchmarks/brax_bridge.py", "--env", b["env"], "--num-envs", str(b["envs"]),
                    "--horizon", str(b["horizon"]), "--device", device], timeout=limit(240))
        ratio = re.search(r"bridged \(fused\) / pure JAX diff-steps/s: ([\d.]+)", step["tail"])
        steps["brax_bridge"] = {**step, "result": {"env": b["env"], "envs": b["envs"], "horizon": b["horizon"],
                                                   "bridged_over_pure_jax": float(ratio.group(1))} if ratio else None}
    else:
        steps["brax_bridge"] = {"status": "skipped (dry run: Brax compiles for minutes on a CPU; --with-brax)"}

    learning = LEARNING[mode]
    if args.dry_run:
        why = "skipped (dry run: Brax compiles for minutes on a CPU; --with-learning brax)"
        learning = {**learning, "backends": {
            name: backend if name != "brax" or name in args.with_learning else {**backend, "skip": why}
            for name, backend in learning["backends"].items()}}
    runs = Path(args.runs) if args.runs else Path(args.out) / "learning_runs"
    if args.dry_run:  # part 7 has a call of its own on a GPU (--newton-hmax); the dry run covers its path here
        try:
            steps["newton_hmax"] = newton_hmax(mode, device, deadline, runs)
        except Exception:  # noqa: BLE001
            import traceback

            steps["newton_hmax"] = {"status": "failed (suite error)", "tail": traceback.format_exc()[-2000:],
                                    "summary": {}, "skipped_backends": {}, "runs": []}
    try:  # the measurements above are written whatever happens here
        steps["learning_hmax"] = learning_study(learning, mode, device, deadline, runs)
    except Exception:  # noqa: BLE001
        import traceback

        steps["learning_hmax"] = {"status": "failed (suite error)", "tail": traceback.format_exc()[-2000:],
                                  "summary": {}, "skipped_backends": {}, "runs": []}
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
    for study in ("learning_hmax", "newton_hmax"):
        if study in results["steps"] and "labels" in results["steps"][study]:
            lines += learning_markdown(results["steps"][study])
    return "\n".join(lines) + "\n"



def write_results(results: dict, started: float, out: Path, stem: str) -> None:
    """Stamp the total time, write ``<stem>.json`` and the markdown table ``<stem>.md`` under ``out``, print
    the table: what the one prepared GPU command brings back, whichever part it ran."""
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (out / f"{stem}.md").write_text(table)
    print(table)
    print(f"wrote {out / f'{stem}.json'} and {out / f'{stem}.md'} in {results['total_seconds']} s")

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (CI)")
    parser.add_argument("--with-brax", action="store_true", help="also run the Brax step in a dry run")
    parser.add_argument("--with-learning", nargs="*", choices=["brax"], default=[],
                        help="in a dry run, also run the H_max study on tiny Brax ants (minutes on a CPU)")
    parser.add_argument("--out", default="gpu_suite_out", help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--runs", default=None, help="folder for the H_max study's runs (default OUT/learning_runs)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole suite (default 540 on a GPU, 900 in a dry run)")
    parser.add_argument("--newton-hmax", action="store_true",
                        help="run only part 7, the Newton ant's H_max sweep (its own call on a lent GPU)")
    parser.add_argument("--newton-budget", type=float, default=NEWTON_BUDGET_S,
                        help=f"seconds for --newton-hmax (default {NEWTON_BUDGET_S:.0f})")
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("gpu_suite: no CUDA device here; use --dry-run to exercise the suite on the CPU")
    if args.newton_hmax:
        if args.dry_run:
            sys.exit("gpu_suite: --newton-hmax is a GPU call; --dry-run runs part 7 at toy sizes already")
        started = time.perf_counter()
        write_results(newton_hmax_call(args, started), started, Path(args.out), "newton_hmax")
        return
    if args.budget is None:
        args.budget = 900.0 if args.dry_run else 540.0
    started = time.perf_counter()
    write_results(suite(args, started), started, Path(args.out), "gpu_suite")


if __name__ == "__main__":
    main()
