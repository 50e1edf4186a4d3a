"""The storage behind JAX's persistent compilation cache: whole entries or none, checked before JAX sees them.

JAX hands a cache two calls, ``get(key) -> bytes | None`` and ``put(key, bytes)``; it serialises and
compresses the executable itself and deserialises what ``get`` returns in native code. Its own file cache
(jax 0.10) writes each entry in place, unlocked unless a size cap is set, and never rewrites an entry that
exists, so a writer killed mid-write leaves a torn file that every later process trips over; several
processes (pytest and its subprocesses, torchrun ranks, Ray trials) share one directory. This cache:

- **writes atomically**: each ``put`` goes to a staging file private to the process (pid and a random
  suffix), which ``os.replace`` then renames over the entry's name. Readers see a whole old entry, a whole
  new one, or none; two processes writing the same key each rename a complete file, the later one wins.
- **checks every entry it returns**: an entry is framed as ``MAGIC | length | crc32 | payload``. A file
  whose frame does not check out (truncated, overwritten, written by something else) is removed and
  reported as a miss, so JAX compiles again and its ``put`` writes the entry anew: ignored and rewritten,
  never handed to the native deserialiser.
- **stays under a size cap**: after each write, the least recently used entries (modification time,
  refreshed on every hit) are removed until the entries fit in ``max_bytes``. Eviction takes a file lock
  (``.lock``) so two processes do not evict for each other; readers and writers need none.
- leaves staging files of killed writers to the first process that opens the cache an hour later.

Nothing here imports JAX: the module is plain file handling, tested without compiling anything.
"""
from __future__ import annotations

import logging
import os
import secrets
import struct
import time
import zlib
from pathlib import Path

logger = logging.getLogger(__name__)

MAGIC = b"MBMIXJC1"
"""First bytes of every entry (format version 1)."""
_HEADER = struct.Struct(">8sQI")  # magic, payload length, crc32 of the payload
ENTRY_SUFFIX = ".entry"
STAGING_SUFFIX = ".staging"
LOCK_NAME = ".lock"
STALE_STAGING_SECONDS = 3600.0
"""A staging file this old belongs to a writer that died (a live one renames it within seconds)."""


def frame(payload: bytes) -> bytes:
    """``payload`` with the header that :func:`unframe` checks."""
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def unframe(data: bytes) -> bytes | None:
    """The payload of a whole, unmodified entry, or ``None`` for anything else."""
    if len(data) < _HEADER.size:
        return None
    magic, length, crc = _HEADER.unpack_from(data)
    payload = data[_HEADER.size:]
    if magic != MAGIC or length != len(payload) or zlib.crc32(payload) != crc:
        return None
    return payload


class GuardedFileCache:
    """A directory of compiled executables, one ``<key>.entry`` file each (see the module docstring).

    ``max_bytes``: the cap on the entries' total size (``0`` or less: no cap). An entry larger than the
    cap is not stored.
    """

    def __init__(self, path: str | os.PathLike, *, max_bytes: int):
        self.path = Path(path)
        self._path = self.path  # JAX's cache interface names its directory so (it logs it on reset)
        self.max_bytes = int(max_bytes)
        self.path.mkdir(parents=True, exist_ok=True)
        self.remove_stale_staging()

    def entry(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"bad cache key {key!r}")
        return self.path / f"{key}{ENTRY_SUFFIX}"

    def get(self, key: str) -> bytes | None:
        """The payload stored under ``key``; ``None`` if absent or corrupt (a corrupt file is removed)."""
        file = self.entry(key)
        try:
            with open(file, "rb") as handle:
                identity = os.fstat(handle.fileno()).st_ino
                data = handle.read()
        except FileNotFoundError:
            return None
        payload = unframe(data)
        if payload is None:
            logger.warning("mbmix_brax: corrupt JAX cache entry %s (%d bytes) removed; it is compiled again",
                           file.name, len(data))
            self._remove_if_same(file, identity)
            return None
        try:
            os.utime(file)  # least recently used = least recently read or written
        except OSError:
            pass
        return payload

    def put(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key`` atomically, then evict down to the cap."""
        file = self.entry(key)
        if 0 < self.max_bytes < len(value) + _HEADER.size:
            logger.info("mbmix_brax: JAX cache entry %s (%d bytes) exceeds the cap, not stored", key, len(value))
            return
        staging = self.path / f".{key}.{os.getpid()}.{secrets.token_hex(4)}{STAGING_SUFFIX}"
        try:
            with open(staging, "wb") as handle:
                handle.write(frame(value))
            os.replace(staging, file)
        finally:
            staging.unlink(missing_ok=True)
        self.evict()

    def entries(self) -> list[tuple[float, int, Path]]:
        """``(modification time, size, path)`` of every entry (files that vanish meanwhile are skipped)."""
        found = []
        for file in self.path.glob(f"*{ENTRY_SUFFIX}"):
            try:
                stat = file.stat()
            except FileNotFoundError:
                continue
            found.append((stat.st_mtime, stat.st_size, file))
        return found

    def size(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self) -> None:
        """Remove the least recently used entries until the rest fit in ``max_bytes``."""
        if self.max_bytes <= 0:
            return
        import filelock  # a dependency of torch; imported here so that reading entries needs nothing

        try:
            with filelock.FileLock(self.path / LOCK_NAME, timeout=30):
                entries = sorted(self.entries())
                total = sum(size for _, size, _ in entries)
                for _, size, file in entries:
                    if total <= self.max_bytes:
                        break
                    file.unlink(missing_ok=True)
                    total -= size
        except filelock.Timeout:  # another process holds it for 30 s: it evicts, this one need not
            logger.info("mbmix_brax: JAX cache eviction skipped (lock busy)")

    def remove_stale_staging(self) -> None:
        cutoff = time.time() - STALE_STAGING_SECONDS
        for file in self.path.glob(f".*{STAGING_SUFFIX}"):
            try:
                if file.stat().st_mtime < cutoff:
                    file.unlink()
            except FileNotFoundError:
                pass

    @staticmethod
    def _remove_if_same(file: Path, identity: int) -> None:
        """Remove ``file`` unless another process has renamed a new entry over it since it was read."""
        try:
            if os.stat(file).st_ino == identity:
                file.unlink()
        except FileNotFoundError:
            pass
