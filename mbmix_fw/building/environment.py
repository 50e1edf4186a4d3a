"""What a run's numbers depend on besides its recipe: the thread count, the library versions, the machine.

Why recorded: a run is bit-identical to itself only on the same machine, software and thread count
(README, "Reproducibility"); a score without its thread count cannot be reproduced. ``environment.json``
in the run folder lists one entry per process that trained the run (the first ``run`` and every
``resume``), so a resumed run that changed machines says so.
"""
from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from ..training.run_folder import ENVIRONMENT_JSON, write_json_atomic

RECORDED_PACKAGES = ("mbmix-fw", "torch", "numpy", "warp-lang", "jax", "jaxlib", "brax", "newton")


def environment(event: str) -> dict[str, Any]:
    """This process's entry: ``event`` (``run`` or ``resume``), torch's thread counts, the thread
    variables, the CPU count, Python, the platform and the versions of the packages that compute."""
    import torch

    versions = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "event": event,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "thread_variables": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
                             if k in os.environ},
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": versions,
    }


def record_environment(out_dir: str | Path, event: str) -> None:
    """Append this process's :func:`environment` entry to ``out_dir/environment.json`` (atomically; an
    unreadable earlier file is replaced rather than trusted)."""
    path = Path(out_dir) / ENVIRONMENT_JSON
    entries: list[Any] = []
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        entries = loaded if isinstance(loaded, list) else []
    except (OSError, ValueError):
        entries = []
    write_json_atomic(path, [*entries, environment(event)])
