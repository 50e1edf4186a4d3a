"""``mbmix-fw sweep``: every grid point × seed of a recipe as a Ray task, each an ordinary run folder.

Order of work, so that bad input costs nothing: plan and validate every trial (no Ray, nothing written)
→ check existing trial folders hold the same recipe → import Ray (missing: install hint) → connect (a
local Ray started here by default, or the cluster at ``--address``; unreachable: one line) → write
``sweep.json`` → submit trials, at most ``max_concurrent`` in flight → print progress as each finishes
→ ``summary.csv`` and the table. Rerunning the same command skips finished trials (``done.json``) and
resumes partial ones from their checkpoints (see :mod:`.trial`).

Ray core tasks, not Tune: a trial is a function call that trains one run to the end; Ray's scheduler
places it by its ``num_cpus`` / ``num_gpus`` (fractions share a GPU). On a cluster the run folders must
be on storage every node sees (a shared file system, or an absolute ``run.out`` on one).
"""
from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import UserError
from ..training.run_folder import ERROR_TXT, RECIPE_JSON, write_json_atomic
from .grid import SweepPlan, Trial
from .summary import BEST_METRIC, SCORE, PointResult, best_point, format_table, write_summary
from .trial import read_done, run_trial, trial_state

if TYPE_CHECKING:
    from ..building.registry import Registry

SWEEP_JSON = "sweep.json"
CONNECT_TIMEOUT_S = 5.0
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20
"""A local Ray's object store: trials exchange only small dicts, so no need for Ray's default 30 % of RAM."""


def check_folders(plan: SweepPlan) -> None:
    """Refuse to resume a trial folder that holds a run of a different recipe (edited recipe, same name)."""
    for trial in plan.trials:
        path = plan.root / trial.name / RECIPE_JSON
        if not path.is_file():
            continue
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{path}: unreadable ({exc}); remove the trial folder or use another --name")
        planned = trial.recipe.model_dump(mode="json")
        if existing != planned:
            field = _first_difference(existing, planned)
            raise UserError(f"{path.parent}: holds a run of a different recipe ({field}); "
                            f"rerun with the original settings or choose another --name")


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
    return f"{prefix}: {json.dumps(a)} there, {json.dumps(b)} now"


LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""The environment that makes a Ray started here take the loopback address as its node address, so its GCS,
raylet, object manager and workers listen on 127.0.0.1 only (what Ray does on macOS and Windows; checked
with Ray 2.60). Without it a local sweep's Ray listens on every interface, and only Ray's token
authentication keeps other hosts out. ``ray.init(_node_ip_address="127.0.0.1")`` does not do this: Ray
turns a loopback address given there into the machine's outward address. Ray reads it when it is
imported."""


def import_ray(local: bool = False):
    """``import ray``, or a one-line install hint. ``local``: a local Ray will be started (no ``--address``),
    so it is confined to the loopback first (:data:`LOOPBACK_ONLY`; a Ray imported earlier in this
    process, by a script that calls the sweep from Python, keeps what it read then)."""
    if local:
        os.environ.update(LOOPBACK_ONLY)
    try:
        import ray
    except ImportError:
        raise UserError("the sweep command needs Ray, which is not installed: pip install 'mbmix-fw[ray]'") from None
    return ray


def connect(ray, address: str | None) -> bool:
    """Connect to ``address`` or start a local Ray; returns whether this call started it (to shut it down).

    An already initialised Ray (a script or test that called ``ray.init``) is used as it is.
    """
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES)
        return True
    if address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, grpc errors...
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"--address {address}: cannot connect to Ray: {first}") from None
    return True


def _check_reachable(address: str) -> None:
    """Fail in seconds, with one line, when nothing listens at ``[ray://]HOST:PORT``."""
    host, _, port = address.removeprefix("ray://").rpartition(":")  # the format was checked by the plan
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"--address {address}: no Ray cluster answers ({exc.strerror or exc})") from None


def point_results(plan: SweepPlan) -> list[PointResult]:
    """Per grid point: its trial count, and the final metrics (from their ``done.json``) and scores (from their
    ``metrics.csv``) of those finished."""
    points: dict[str, list[Trial]] = {}
    for trial in plan.trials:
        points.setdefault(trial.point, []).append(trial)
    results = []
    for point, trials in points.items():
        finished = [plan.root / t.name for t in trials if trial_state(plan.root / t.name) == "finished"]
        results.append(PointResult(point, trials[0].values, len(trials), [read_done(t) for t in finished],
                                   [SCORE.of_run(t) for t in finished]))
    return results


def run_sweep(plan: SweepPlan, say: Callable[[str], None] = print) -> int:
    """Run every unfinished trial of ``plan`` on Ray; returns the number of failed trials."""
    check_folders(plan)
    settings = plan.settings
    ray = import_ray(local=settings.address is None)
    started_ray = connect(ray, settings.address)
    try:
        _write_sweep_json(plan)
        return _run_trials(ray, plan, say)
    finally:
        if started_ray:
            ray.shutdown()


def _run_trials(ray, plan: SweepPlan, say: Callable[[str], None]) -> int:
    settings = plan.settings
    remote = ray.remote(num_cpus=settings.cpus_per_trial, num_gpus=settings.gpus_per_trial,
                        max_retries=0)(run_trial)
    threads = max(1, math.floor(settings.cpus_per_trial))
    todo = [t for t in plan.trials if trial_state(plan.root / t.name) != "finished"]
    total, failed = len(plan.trials), {}
    done = total - len(todo)
    if done:
        say(f"sweep {plan.name}: {done} of {total} trials already finished, skipped")
    limit = settings.max_concurrent or len(todo) or 1
    pending: dict[Any, Trial] = {}
    queue = list(todo)
    started = time.perf_counter()
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                trial = queue.pop(0)
                out = (plan.root / trial.name).resolve()
                note = "resuming" if trial_state(out) == "partial" else "starting"
                pending[remote.remote(trial.recipe.model_dump(mode="json"), str(out), threads)] = trial
                say(f"  {note} {trial.name}")
            ready, _ = ray.wait(list(pending), num_returns=1)
            trial = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - the worker itself died (OOM, node lost)
                result = {"status": "failed", "error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"}
            if result["status"] == "failed":
                failed[trial.name] = result["error"]
                line = f"FAILED {trial.name}: {result['error']} (see {plan.root / trial.name / ERROR_TXT})"
            else:
                done += 1
                line = f"done {trial.name}: {BEST_METRIC}={result['final'].get(BEST_METRIC, math.nan):.4g}"
            say(f"[{done}/{total} done, {len(pending)} running, {len(failed)} failed, "
                f"{time.perf_counter() - started:.0f}s] {line}{_best_text(plan)}")
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        say(f"sweep {plan.name}: interrupted; rerun the same command to resume unfinished trials")
        raise
    results = point_results(plan)
    path = write_summary(plan.root, plan.grid_keys, results)
    say(format_table(results))
    say(f"wrote {path}")
    for name, error in failed.items():
        say(f"failed: {name}: {error}")
    return len(failed)


def _best_text(plan: SweepPlan) -> str:
    best = best_point(point_results(plan))
    if best is None:
        return ""
    return f"  best so far: {best.point} (IQM of the {SCORE} {best.score_summary().iqm:.4g}, {len(best.finals)} seeds)"


def _write_sweep_json(plan: SweepPlan) -> None:
    """``sweep.json``: the grid, the trials and their grid values (what ``report --group`` and humans read)."""
    data = {"name": plan.name, "grid": plan.settings.grid,
            "trials": [{"name": t.name, "point": t.point, "values": t.values, "seed": t.seed}
                       for t in plan.trials]}
    write_json_atomic(plan.root / SWEEP_JSON, data)


def sweep_command(recipe: str, registry: "Registry", *, grid: list[str], seeds: str | None, name: str | None,
                  address: str | None, cpus_per_trial: float | None, gpus_per_trial: float | None,
                  max_concurrent: int | None, overrides: list[str]) -> int:
    """The CLI command: plan, run, summarise. Exit code 0 when every trial finished, 1 when any failed."""
    from .grid import plan_sweep

    plan = plan_sweep(recipe, registry, grid=grid, seeds=seeds, name=name, address=address,
                      cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                      max_concurrent=max_concurrent, overrides=overrides)
    points = len({t.point for t in plan.trials})
    print(f"sweep {plan.name}: {points} grid point(s) x {len(plan.trials) // points} seed(s) "
          f"= {len(plan.trials)} trials in {plan.root}", flush=True)
    failures = run_sweep(plan, lambda line: print(line, flush=True))
    if failures:
        print(f"{failures} trial(s) failed; fix the cause and rerun the same command to retry them",
              file=sys.stderr)
    return 1 if failures else 0
