"""JAX's persistent compilation cache as the Brax plugin sets it up: whole entries or none, a corrupt entry
compiled again and rewritten (never handed to JAX's native deserialiser), a size cap, processes sharing a
directory, an off switch, and the test run's own directory.

The storage is tested on plain bytes; the rest in fresh processes that compile small JAX functions (no
Brax), as a user's runs would: the cache is configured once per process.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbmix_brax.jax_cache import ENTRY_SUFFIX, STAGING_SUFFIX, GuardedFileCache, frame, unframe
from mbmix_brax.jax_setup import cache_dir

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import json, os, sys, time, warnings
from pathlib import Path
warnings.filterwarnings("error", message="mbmix_brax")  # the guarded cache installs without a warning
import jax
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name.rsplit("/", 1)[-1]))
from mbmix_brax.jax_setup import configure_jax
jax = configure_jax()  # what the bridge does on import (without torch)
barrier = os.environ.get("PROBE_BARRIER")
if barrier:  # wait until every process of the test is ready, then compile at the same moment
    Path(f"{barrier}.{os.getpid()}").touch()
    while not Path(barrier).exists():
        time.sleep(0.005)
jnp = jax.numpy
total = 0.0
for n in (8, 16, 24, 32):
    f = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) @ x.T, axis=0) / x.shape[0])
    total += float(f(jnp.ones((n, n))).sum())
print(json.dumps({"total": total, "hits": events.count("cache_hits"), "misses": events.count("cache_misses"),
                  "dir": jax.config.jax_compilation_cache_dir}))
"""


def probe_env(cache: Path | str, **extra: str) -> dict[str, str]:
    return {**os.environ, "MBMIX_FW_JAX_CACHE": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            **extra}


def finished(process: subprocess.CompletedProcess | subprocess.Popen, stdout: str, stderr: str) -> dict:
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def run_probe(cache: Path | str, **extra: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                          env=probe_env(cache, **extra), cwd=ROOT)
    return finished(done, done.stdout, done.stderr)


def entry_files(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"*{ENTRY_SUFFIX}"))


# ---------------------------------------------------------------- the storage, on plain bytes
DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "one byte flipped": lambda data: data[:-5] + bytes([data[-5] ^ 1]) + data[-4:],
    "header only": lambda data: data[:20],
    "not ours (JAX's own format)": lambda data: data[20:],
    "empty": lambda data: b"",
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_entry_is_a_miss_removed_and_then_rewritten(tmp_path, damage):
    cache = GuardedFileCache(tmp_path, max_bytes=0)
    value = os.urandom(5000)
    cache.put("jit_f-abc", value)
    assert cache.get("jit_f-abc") == value
    file = cache.entry("jit_f-abc")
    file.write_bytes(DAMAGE[damage](file.read_bytes()))
    assert cache.get("jit_f-abc") is None
    assert not file.exists()  # removed, so the next put (JAX's, after compiling) writes it anew
    cache.put("jit_f-abc", value)
    assert cache.get("jit_f-abc") == value


def test_frames_carry_a_checksum():
    payload = os.urandom(300)
    framed = frame(payload)
    assert unframe(framed) == payload
    flipped = bytearray(framed)
    flipped[-1] ^= 0x80
    assert unframe(bytes(flipped)) is None


def test_a_put_renames_a_staging_file_over_the_entry_and_leaves_none_behind(tmp_path):
    """Readers see a whole entry or none: a put never writes into the file a reader may have open."""
    cache = GuardedFileCache(tmp_path, max_bytes=0)
    cache.put("k", b"first")
    file = cache.entry("k")
    with open(file, "rb") as reader:
        before = os.fstat(reader.fileno()).st_ino
        cache.put("k", b"second, longer")
        assert reader.read() == frame(b"first")  # the open file is the old, whole entry
    assert os.stat(file).st_ino != before  # a new file took the name (rename, not an in-place write)
    assert cache.get("k") == b"second, longer"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(STAGING_SUFFIX)] == []


def test_staging_files_of_dead_writers_are_removed_and_never_read(tmp_path):
    stale, fresh = tmp_path / f".k.123.ab{STAGING_SUFFIX}", tmp_path / f".k.456.cd{STAGING_SUFFIX}"
    for path in (stale, fresh):
        path.write_bytes(frame(b"half"))
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    cache = GuardedFileCache(tmp_path, max_bytes=0)
    assert not stale.exists() and fresh.exists()  # a live writer's file is left to it
    assert cache.get("k") is None and cache.entries() == []


def test_the_cache_stays_under_its_cap_dropping_the_least_recently_used(tmp_path):
    cache = GuardedFileCache(tmp_path, max_bytes=3500)
    for age, key in enumerate("abc"):
        cache.put(key, bytes(1000))
        past = time.time() - 100 + age  # a, then b, then c
        os.utime(cache.entry(key), (past, past))
    assert cache.get("a") == bytes(1000)  # read: now the most recently used
    cache.put("d", bytes(1000))
    assert {p.stem for p in entry_files(tmp_path)} == {"a", "c", "d"}  # b was the least recently used
    assert cache.size() <= 3500
    cache.put("huge", bytes(4000))  # larger than the cap on its own: not stored
    assert cache.get("huge") is None and cache.size() <= 3500


def test_the_cache_can_be_turned_off_and_keeps_its_location_otherwise(monkeypatch, tmp_path):
    for off in ("off", "OFF", "0", "none", ""):
        monkeypatch.setenv("MBMIX_FW_JAX_CACHE", off)
        assert cache_dir() is None
    monkeypatch.setenv("MBMIX_FW_JAX_CACHE", str(tmp_path / "here"))
    assert cache_dir() == tmp_path / "here"


def test_the_test_run_has_its_own_cache_directory():
    """Set by tests/conftest.py before any test builds a Brax env: never the user's cache."""
    from mbmix_brax import jax_setup

    users = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mbmix_fw" / "jax"
    ours = os.environ["MBMIX_FW_JAX_CACHE"]
    assert Path(ours) != users
    if os.environ.get("MBMIX_FW_TEST_JAX_CACHE") is None:
        assert Path(ours).name == "jax-tests"
    if "jax" in sys.modules and jax_setup._configured:  # this process's JAX already uses it
        assert sys.modules["jax"].config.jax_compilation_cache_dir in (None, ours)


# ---------------------------------------------------------------- real compilations, fresh processes
# never skipped in CI (the test extra installs jax); found, not imported: the subprocesses import it
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")


@needs_jax
def test_a_corrupt_entry_is_compiled_again_and_rewritten_in_a_fresh_process(tmp_path):
    cache = tmp_path / "jax"
    first = run_probe(cache)
    assert first["misses"] > 0 and first["hits"] == 0 and first["dir"] == str(cache)
    files = entry_files(cache)
    assert files, "JAX did not write through the guarded storage"
    for file in files:
        file.write_bytes(os.urandom(file.stat().st_size))  # garbage where each entry was
    second = run_probe(cache)
    assert second["total"] == first["total"] and second["hits"] == 0 and second["misses"] > 0
    assert all(unframe(f.read_bytes()) is not None for f in entry_files(cache))  # rewritten, whole
    third = run_probe(cache)
    assert third["total"] == first["total"] and third["hits"] > 0 and third["misses"] == 0


@needs_jax
def test_two_processes_compiling_the_same_functions_share_one_directory(tmp_path):
    cache, barrier = tmp_path / "jax", tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", PROBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=probe_env(cache, PROBE_BARRIER=str(barrier)), cwd=ROOT)
                 for _ in range(2)]
    deadline = time.time() + 240
    while len(list(tmp_path.glob("go.*"))) < 2 and time.time() < deadline:
        time.sleep(0.01)
    barrier.touch()
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        results.append(finished(process, stdout, stderr))
    assert results[0]["total"] == results[1]["total"]
    assert all(unframe(f.read_bytes()) is not None for f in entry_files(cache))
    assert not [p for p in cache.iterdir() if p.name.endswith(STAGING_SUFFIX)]
    after = run_probe(cache)
    assert after["hits"] > 0 and after["misses"] == 0 and after["total"] == results[0]["total"]


@needs_jax
def test_turned_off_nothing_is_written(tmp_path):
    done = run_probe("off", XDG_CACHE_HOME=str(tmp_path), HOME=str(tmp_path))
    assert done["dir"] is None and done["misses"] == 0 and done["hits"] == 0
    assert not (tmp_path / "mbmix_fw").exists()
