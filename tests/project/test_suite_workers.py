"""The test suite's own setup: under pytest-xdist (README's test command runs two workers) each worker's torch,
and every training run a test starts, gets its share of the cores, not all of them; and JAX compiles with XLA's
cheap settings in every test process."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


@pytest.fixture(scope="module")
def conftest():
    spec = importlib.util.spec_from_file_location("suite_conftest", CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("cores, workers, expected", [(2, "2", 1), (8, "2", 4), (3, "2", 1), (1, "4", 1)])
def test_each_worker_gets_its_share_of_the_cores(conftest, monkeypatch, cores, workers, expected):
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", workers)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert conftest.threads_per_worker() == expected


def test_outside_xdist_nothing_is_limited(conftest, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert conftest.threads_per_worker() is None


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER_COUNT"), reason="runs under pytest-xdist (CI's -n 2)")
def test_this_worker_and_its_subprocesses_use_their_share(conftest):
    share = conftest.threads_per_worker()
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == str(share)
    assert torch.get_num_threads() == share


def test_the_cheap_xla_settings_come_first_so_the_callers_own_flags_win(conftest, monkeypatch):
    monkeypatch.delenv("MBMIX_FW_TEST_XLA_FLAGS", raising=False)
    cheap = conftest.CHEAP_COMPILE_XLA_FLAGS
    assert "--xla_backend_optimization_level=0" in cheap and "--xla_cpu_use_fusion_emitters=false" in cheap
    assert conftest.xla_flags_for_tests(None) == cheap
    assert conftest.xla_flags_for_tests("--xla_backend_optimization_level=3") == \
        f"{cheap} --xla_backend_optimization_level=3"
    inherited = f"{cheap} --xla_force_host_platform_device_count=2"  # a worker started by the main process
    assert conftest.xla_flags_for_tests(inherited) == inherited


def test_an_empty_override_tests_under_xla_s_defaults(conftest, monkeypatch):
    monkeypatch.setenv("MBMIX_FW_TEST_XLA_FLAGS", "")
    assert conftest.xla_flags_for_tests(None) == ""
    assert conftest.xla_flags_for_tests("--xla_dump_to=/tmp/x") == "--xla_dump_to=/tmp/x"


@pytest.mark.skipif("MBMIX_FW_TEST_XLA_FLAGS" in os.environ, reason="the run chose its own XLA flags")
def test_this_process_and_its_subprocesses_compile_with_the_cheap_settings(conftest):
    assert os.environ["XLA_FLAGS"].startswith(conftest.CHEAP_COMPILE_XLA_FLAGS)
