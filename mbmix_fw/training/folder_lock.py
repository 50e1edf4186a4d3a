"""One writer per run folder: an OS lock on the folder's ``.writer.lock`` file.

Why: two processes writing one folder (two ``run --out X`` started together, a ``run`` and a ``resume``, a
sweep rerun while the first one still trains) interleave rows in ``metrics.csv``, overwrite each other's
``recipe.json`` and leave whichever checkpoint came last. A writer (``run``, ``resume``, a sweep trial,
torchrun's rank 0) therefore holds the folder's lock for as long as it writes, and a second one is refused
with one line naming the holder.

Why ``fcntl.flock``: the kernel releases it when the holder dies, however it dies (``kill -9``, the
out-of-memory killer), so a folder never stays locked by a dead process and nothing has to be cleaned up;
a later writer takes it over and overwrites the holder line. On NFS, Linux turns it into an NFS lock, which
holds across machines (the holder's host is then named in the refusal). The line (pid, host, command, start time) is only for the
refusal message. One case is refused although the pid in the line is dead: a child that inherited the
lock by ``fork`` still holds it, and such a child is a copy of the writer, so it may still write.

Within one process the lock counts: each :func:`hold_folder` needs one :func:`release_folder`, and the
folder is free when the count is back to zero (a sweep trial holds it and the run it starts holds it
again; the run lets go when it has trained, the trial after writing ``done.json``). Process exit releases
it whatever the count. Torch-free, POSIX only (``fcntl``).
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from ..errors import UserError
from .run_folder import WRITER_LOCK, remove_leftover_temporaries

_held: dict[str, list[int]] = {}
"""Folders this process holds: resolved path → [the lock file's descriptor (open while held), count]."""


def hold_folder(folder: str | Path) -> None:
    """Become ``folder``'s only writer (creating the folder and its lock file), then remove the temporary
    files a killed writer left; :class:`UserError` naming the holder if another process writes it."""
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _held:
        _held[key][1] += 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by exec'd children
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise UserError(_refusal(folder, holder)) from None
    except BaseException:
        os.close(fd)
        raise
    _held[key] = [fd, 1]
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_this_process()) + "\n").encode("utf-8"), 0)
        remove_leftover_temporaries(folder)
    except BaseException:
        release_folder(folder)
        raise


def refuse_if_held(folder: str | Path) -> None:
    """:class:`UserError` naming the holder if another process writes ``folder`` now; creates nothing (so a
    refused command leaves no trace)."""
    folder = Path(folder)
    if os.path.realpath(folder) in _held:
        return
    try:
        fd = os.open(folder / WRITER_LOCK, os.O_RDONLY)
    except OSError:  # no lock file (a new folder) or not readable: nobody can be holding it through us
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(_refusal(folder, _read_holder(fd))) from None
    finally:
        os.close(fd)  # closing drops the shared lock taken to test it


def release_folder(folder: str | Path) -> None:
    """Undo one :func:`hold_folder`; the last one frees the folder (nothing if this process does not hold
    it). The lock file stays: a file removed while another process opens it would let two writers lock two
    different files."""
    key = os.path.realpath(folder)
    if key not in _held:
        return
    _held[key][1] -= 1
    if _held[key][1] <= 0:
        os.close(_held.pop(key)[0])


def _this_process() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join(sys.argv),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


HOLDER_LINE_WAIT_S = 2.0
"""How long a refused writer waits for the holder's line: the holder writes it just after taking the lock,
so a writer refused in that instant (two started together) would otherwise name "an unknown process"."""


def _read_holder(fd: int) -> dict[str, object]:
    deadline = time.monotonic() + HOLDER_LINE_WAIT_S
    while True:
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
        except (OSError, ValueError):  # empty, or caught half-written
            holder = {}
        if isinstance(holder, dict) and holder.get("pid") or time.monotonic() > deadline:
            return holder if isinstance(holder, dict) else {}
        time.sleep(0.02)


def _refusal(folder: Path, holder: dict[str, object]) -> str:
    pid, host = holder.get("pid"), holder.get("host")
    command = " ".join(str(holder.get("command", "?")).split())[:200]  # one line, whatever argv held
    who = f"pid {pid} on {host}, started {holder.get('started', '?')}: {command}" if pid else "an unknown process"
    if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        return (f"{folder}: is being written by a process that inherited the lock of pid {pid} (no longer "
                f"running; {who}); stop that process (fuser {folder / WRITER_LOCK}), then try again")
    return f"{folder}: is being written by {who}; a run folder has one writer at a time: wait for it or stop it"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


__all__ = ["hold_folder", "refuse_if_held", "release_folder"]
