"""Process-wide JAX settings the plugin needs, applied once, before the first JAX computation.

- ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (set before jax is imported): JAX otherwise reserves 75% of the
  GPU at start-up and torch, which owns the policy, the critic and the world model, runs out of memory.
- The persistent compilation cache: compiling Brax's physics takes 3–50 s per function on a CPU; with the
  cache a second process (resume, the next seed, the next test) loads the executables instead. Location:
  ``$MBMIX_FW_JAX_CACHE``, else ``$XDG_CACHE_HOME/mbmix_fw/jax``, else ``~/.cache/mbmix_fw/jax``; set
  ``MBMIX_FW_JAX_CACHE=off`` to disable it. A cache dir set by the user (``JAX_COMPILATION_CACHE_DIR`` or
  ``jax.config``) is left alone.
"""
from __future__ import annotations

import os
from pathlib import Path

_configured = False


def cache_dir() -> Path | None:
    """Where compiled executables are kept, or ``None`` when the cache is off."""
    value = os.environ.get("MBMIX_FW_JAX_CACHE")
    if value is not None:
        return None if value.lower() in ("", "0", "off", "none") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mbmix_fw" / "jax"


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
            path.mkdir(parents=True, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", str(path))
            if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
                jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return jax
