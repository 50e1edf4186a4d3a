"""Shared test helpers, and the test run's own JAX compilation cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def jax_cache_dir_for_tests() -> str:
    """Where the tests (and the processes they start) keep JAX's compiled executables: not the user's cache.

    A test run must neither trip over nor fill the cache that training runs share, so it gets its own
    directory, kept between runs (a cold one costs many minutes of Brax compiles):
    ``$MBMIX_FW_TEST_JAX_CACHE`` (a path, or ``off``), else ``$XDG_CACHE_HOME/mbmix_fw/jax-tests``, else
    ``~/.cache/mbmix_fw/jax-tests``. A cold run: ``MBMIX_FW_TEST_JAX_CACHE=$(mktemp -d)``.
    """
    chosen = os.environ.get("MBMIX_FW_TEST_JAX_CACHE")
    if chosen is not None:
        return chosen
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "mbmix_fw" / "jax-tests")


# set at import, before any test imports the Brax plugin (which reads it once per process)
os.environ["MBMIX_FW_JAX_CACHE"] = jax_cache_dir_for_tests()


# XLA's flags for the test run's JAX programs: the cheap compile settings.
CHEAP_COMPILE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def xla_flags_for_tests(user_flags: str | None) -> str:
    """``XLA_FLAGS`` for the tests and the processes they start: XLA's cheap CPU compile settings first, then
    the caller's own ``XLA_FLAGS`` (XLA lets a later flag override an earlier one, so the caller's win).

    Why: on a 2-core CPU with empty caches most of the Brax tests' time is XLA compiling programs that then
    run for milliseconds (a positional pendulum's step and its pullback: 47 s to compile; 20 s with these
    flags). ``benchmarks/xla_cpu_flags.py`` on reacher at 32 envs: first use 0.60x as long, the window 2.5x
    slower, which tests on 2-env batches do not feel, and the one that trains reacher at its recipe's size
    still gains (its compiles dominate). The suite from empty caches took 19.6 min instead of 27.4 on the
    same machine (``benchmarks/RESULTS.md``). What runs is the same program: only code generation changes,
    and every numeric check (finite differences, equality with Brax's own step) is made under these flags.
    Users' runs keep XLA's defaults. ``MBMIX_FW_TEST_XLA_FLAGS`` replaces the cheap settings (set it empty
    to test under XLA's defaults).
    """
    cheap = os.environ.get("MBMIX_FW_TEST_XLA_FLAGS", CHEAP_COMPILE_XLA_FLAGS)
    if cheap.strip() and user_flags and user_flags.startswith(cheap):  # an xdist worker inherits the main's
        return user_flags
    return " ".join(flags for flags in (cheap, user_flags) if flags and flags.strip())


# set at import, before any test imports jax (XLA reads its flags when the first backend starts)
os.environ["XLA_FLAGS"] = xla_flags_for_tests(os.environ.get("XLA_FLAGS"))


def threads_per_worker() -> int | None:
    """Under pytest-xdist (README's test command runs ``-n 2``): the cores this process may use divided by
    the workers, at least 1; None outside xdist.

    Why: torch (and the training runs a test starts as subprocesses) would otherwise use every core in every
    worker, and OpenMP's threads spin while they wait for a core another worker holds — on a 2-core machine
    that made the pendulum learning tests ten times slower than run alone.
    """
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(workers))


# set at import, before torch is imported (xdist sets the worker variables before it loads this file)
if threads_per_worker() is not None:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads_per_worker())


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_jax_executables():
    """After each test module, drop JAX's compiled executables (``jax.clear_caches()``), so one pytest
    process does not run out of memory mappings.

    Why: XLA's CPU JIT maps every compiled kernel's code and data as separate memory regions (about ten per
    small executable) and frees them only with the executable. The whole suite runs in one process; with
    every Brax function of every test kept compiled, it reached 60 000 of Linux's default 65 530 mappings
    (``vm.max_map_count``) inside the Brax tests, and a run that compiled a few more died in LLVM's JIT
    linker (``RuntimeDyldImpl::emitSection`` → ``report_fatal_error``: SIGABRT, or SIGSEGV), which is what
    killed the two runs of the reverted Brax speed-up. A module that needs an executable again reloads it
    from the test run's persistent compilation cache (set above), which is cheap.
    """
    yield
    import sys

    if "jax" in sys.modules:
        import gc

        sys.modules["jax"].clear_caches()
        gc.collect()


_CLI_CALLS_SCRIPT = (  # argv: one entry per CLI call, its arguments joined by \x1f
    "import sys\nfrom mbmix_fw.commands.cli import main\n"
    "for args in sys.argv[1:]:\n"
    "    rc = main(args.split('\\x1f'))\n"
    "    assert rc == 0, (rc, args)\n"
)


def _run_cli_calls(calls: list[list[str]], timeout: float):
    """Run ``mbmix-fw`` CLI calls one after another in ONE fresh Python process (the repository as its working
    directory); stop at the first that does not return 0 (its arguments end the process's stderr).

    Why one process: each process pays its imports and its simulators' set-up once (torch, Brax's import of
    MJX and warp: ~7 s; Newton's warp modules: ~5 s per process), which for a dozen tiny recipe runs was
    most of their time. Still a fresh process, apart from pytest's own.
    """
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _CLI_CALLS_SCRIPT, *("\x1f".join(call) for call in calls)],
                          capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).resolve().parents[1])


@pytest.fixture
def run_cli_calls():
    """``run_cli_calls(calls, timeout)``: see :func:`_run_cli_calls`; returns the ``CompletedProcess``."""
    return _run_cli_calls


def _train_until_checkpoint_at(trainer, iteration: int) -> None:
    """Train until the checkpoint of ``iteration`` is on disk, then stop as a crash would."""
    save = trainer.save_checkpoint

    def save_then_crash(*args, **kwargs):
        save(*args, **kwargs)
        if trainer.iteration == iteration:
            raise KeyboardInterrupt

    trainer.save_checkpoint = save_then_crash
    with pytest.raises(KeyboardInterrupt):
        trainer.train()


@pytest.fixture
def crash_after_checkpoint():
    """``crash_after_checkpoint(trainer, iteration)``: an interrupted run whose last checkpoint is ``iteration``."""
    return _train_until_checkpoint_at


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped, not failed, where torch sees no CUDA device (``pytest -m cuda``
    runs them on a GPU machine; ``benchmarks/gpu_suite.py`` does it with the GPU measurements)."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in marked:
        item.add_marker(skip)
