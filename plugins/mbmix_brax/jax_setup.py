"""Process-wide JAX settings the plugin needs, applied once, before the first JAX computation.

- ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (set before jax is imported): JAX otherwise reserves 75% of the
  GPU at start-up and torch, which owns the policy, the critic and the world model, runs out of memory.
- The persistent compilation cache: compiling Brax's physics takes 3–50 s per function on a CPU; with the
  cache a second process (resume, the next seed, the next test) loads the executables instead.

  - Location: ``$MBMIX_FW_JAX_CACHE``, else ``$XDG_CACHE_HOME/mbmix_fw/jax``, else ``~/.cache/mbmix_fw/jax``.
    ``MBMIX_FW_JAX_CACHE=off`` (or ``0``, ``none``, empty) turns it off: every process compiles.
  - Size cap: ``$MBMIX_FW_JAX_CACHE_MAX_MB`` (default 2048); least recently used entries go first.
  - Storage: :class:`mbmix_brax.jax_cache.GuardedFileCache` (atomic writes through per-process staging
    files, every entry checksummed and a corrupt one removed and compiled again, never deserialised),
    installed in place of JAX's own file cache, which writes entries in place and never replaces a torn
    one. JAX offers no public way to choose the storage, so it is set on JAX's cache module by attribute;
    should that attribute move, JAX's own cache is used with the same cap, which makes it take a file lock
    around every read and write (so no two processes touch an entry at once), and one warning says so.
  - Which executables: those taking ≥ 0.1 s to compile (``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``
    overrides), of any size.

  A cache dir set by the user (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is left alone, with
  JAX's own storage. The test suite uses a directory of its own (``tests/conftest.py``).
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from .jax_cache import GuardedFileCache

DEFAULT_CACHE_MAX_MB = 2048
OFF_VALUES = ("", "0", "off", "none", "false")

_configured = False


def cache_dir() -> Path | None:
    """Where compiled executables are kept, or ``None`` when the cache is off."""
    value = os.environ.get("MBMIX_FW_JAX_CACHE")
    if value is not None:
        return None if value.strip().lower() in OFF_VALUES else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mbmix_fw" / "jax"


def cache_max_bytes() -> int:
    """The cache's size cap in bytes (``MBMIX_FW_JAX_CACHE_MAX_MB``, default 2048 MB)."""
    value = os.environ.get("MBMIX_FW_JAX_CACHE_MAX_MB", "").strip()
    megabytes = float(value) if value else DEFAULT_CACHE_MAX_MB
    if megabytes <= 0:
        raise ValueError(f"MBMIX_FW_JAX_CACHE_MAX_MB must be positive (use MBMIX_FW_JAX_CACHE=off to turn the "
                         f"cache off), got {value!r}")
    return int(megabytes * 2**20)


def install_cache(jax, path: Path, max_bytes: int) -> GuardedFileCache | None:
    """Point JAX's persistent cache at ``path`` with the guarded storage; ``None`` if it could not be
    installed (JAX's own storage then runs with the cap, hence locked)."""
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_compilation_cache_max_size", max_bytes)
    cache = GuardedFileCache(path, max_bytes=max_bytes)
    module = sys.modules.get("jax._src.compilation_cache")
    if module is None or getattr(module, "_cache", "missing") is not None:
        warnings.warn("mbmix_brax: could not install the guarded JAX compilation cache (this jax version "
                      "keeps its cache elsewhere); using JAX's own, with a lock and a size cap",
                      RuntimeWarning, stacklevel=3)
        return None
    module._cache = cache
    return cache


def configure_jax():
    """Import jax with the settings above (idempotent) and return the module."""
    global _configured
    if not _configured:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    if not _configured:
        _configured = True
        path = cache_dir()
        if path is not None and not jax.config.jax_compilation_cache_dir:
            install_cache(jax, path, cache_max_bytes())
            if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
                jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return jax
