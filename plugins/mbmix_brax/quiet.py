"""Brax's import and env construction without the two messages every run would otherwise print.

- ``Failed to import warp: ...`` and ``Failed to import mujoco_warp: ...`` (stdout): brax imports
  ``mujoco.mjx``, whose optional Warp backend prints these when warp-lang is missing or broken. This plugin never uses MJX's Warp backend, and the line lands
  in the middle of a run's output (or of JSON a script reads), so it is dropped. Any other line printed
  meanwhile is passed through.
- ``Brax System, piplines and environments are not actively being maintained`` (a ``UserWarning`` at
  every env construction): the plugin pins the brax it is tested with; the notice is not something a
  user of a recipe can act on. Other warnings pass through.
"""
from __future__ import annotations

import contextlib
import io
import sys
import warnings
from typing import Iterator

DROPPED_LINE_PREFIXES = ("Failed to import warp:", "Failed to import mujoco_warp:")
DROPPED_WARNING = r"Brax System, piplines and environments are not actively being maintained"


@contextlib.contextmanager
def quiet_brax() -> Iterator[None]:
    captured = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured):
            warnings.filterwarnings("ignore", message=DROPPED_WARNING, category=UserWarning)
            yield
    finally:
        kept = [line for line in captured.getvalue().splitlines(keepends=True)
                if not line.startswith(DROPPED_LINE_PREFIXES)]
        sys.stdout.write("".join(kept))
