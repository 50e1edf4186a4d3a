"""Preparing and finishing a run: the one service behind ``mbmix-fw run``, ``mbmix-fw resume``, every sweep
trial and every torchrun rank.

Why one service: a new run and a resumed one must refuse the same folders with the same messages, read the
same files and restore checkpoints the same way whether one process, a Ray task or K ranks do it. The
callers above it only parse arguments and print (``commands/cli.py``) or add what is theirs: the rank split
and the process group (``distributed/ddp.py``), ``done.json`` (``distributed/trial.py``).

Two ways in:

- a **new run**: :func:`plan_run` loads the recipe with its overrides (``--set``, then ``--device`` and
  ``--out``, see :func:`run_overrides`) and checks the run folder it will write; :func:`start_run` builds
  the trainer and writes ``recipe.json`` and ``plugins.json``;
- a **saved run**: :func:`open_saved_run` reads a run folder (``recipe.json``, ``checkpoints/last.pt``, and
  ``data_parallel.json``'s rank count) and :func:`resume_run` builds the trainer and restores the checkpoint,
  after refusing a ``recipe.json`` edited in a field the checkpoint cannot honour (:mod:`.resumable`). A
  folder whose run stopped before its first checkpoint (killed, a full disk) has no checkpoint to restore:
  :func:`resume_run` starts that run again from iteration 0 in the same folder, so such a folder is never a
  dead end (``run`` refuses it as a run folder, ``resume`` continues it).

Either gives a :class:`Run`; ``run.train()`` trains it, :func:`summary_line` is what the CLI prints after.
"""
from __future__ import annotations

import contextlib
import errno
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import attrs

from ..errors import PROG, UserError
from .environment import record_environment
from ..training.folder_lock import hold_folder, refuse_if_held, release_folder
from ..training.run_folder import (CHECKPOINT, DATA_PARALLEL_JSON, METRICS_CSV, RECIPE_JSON, STARTED_RECIPE,
                                   WRITER_LOCK, remove_training_outputs, write_json_atomic)

if TYPE_CHECKING:
    import torch

    from ..training.trainer import Trainer
    from .recipe import Override, Recipe
    from .registry import Registry


@attrs.define(eq=False)
class Run:
    """A built run, ready to train.

    ``recipe`` is the run's recipe as its folder holds it (a data-parallel rank's trainer is built from its
    slice, ``trainer_recipe`` below, but the folder holds the whole batch); ``out_dir`` is the run folder
    (``None`` for a rank that writes nothing); ``source`` names the recipe in messages."""

    recipe: "Recipe"
    out_dir: Path | None
    trainer: "Trainer"
    source: str
    started_afresh: bool = False
    """True for a resumed folder that held no checkpoint: the run starts again from iteration 0."""

    @property
    def finished(self) -> bool:
        """True when the trainer's budget is already spent (a finished run was resumed): ``run.iterations``
        updates, or ``run.env_steps`` env steps."""
        return self.trainer.finished()

    def train(self) -> dict[str, float]:
        """Train to ``run.iterations`` (or the ``run.env_steps`` budget); the final metrics (``eval/return``,
        ``eval/initial_return``, …). Then the folder is free for its next writer (a resume). A full disk (or
        a file-size limit) while writing the run folder is a one-line :class:`UserError`
        (:func:`disk_full_error`), not a crash with a TensorBoard thread's traceback: the folder keeps its
        last checkpoint, and ``resume`` continues from it once there is room."""
        with _quiet_disk_full_threads():
            try:
                return self.trainer.train()
            except OSError as exc:
                if exc.errno not in DISK_FULL:
                    raise
                raise disk_full_error(exc, self.out_dir) from None
            finally:
                if self.out_dir is not None:
                    release_folder(self.out_dir)


@attrs.frozen
class SavedRun:
    """A run folder as :func:`open_saved_run` found it: the validated ``recipe.json`` and how many ranks
    trained it (1, or K for ``torchrun --nproc_per_node=K``)."""

    run_dir: Path
    recipe: "Recipe"
    source: str
    world_size: int = 1

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINT

    @property
    def has_checkpoint(self) -> bool:
        """False when the run stopped before its first checkpoint (:func:`resume_run` then starts afresh)."""
        return self.checkpoint.is_file()


DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
"""The ``errno`` values of a write that found no room: no space left, over the file-size limit
(``RLIMIT_FSIZE``), over the disk quota."""


def disk_full_error(exc: OSError, run_dir: Path | None) -> UserError:
    """One line for a write that found no room: what happened and what to do next (resume ``run_dir`` once
    it holds ``recipe.json``, else try again). Without ``run_dir``, the file the error names, if any."""
    reason = f"{exc.strerror or exc}, errno {exc.errno}"
    if run_dir is None:
        where = f"{exc.filename}: " if exc.filename else ""
        return UserError(f"{where}disk full / file too large ({reason}); free space and try again")
    if not (run_dir / RECIPE_JSON).is_file():
        return UserError(f"{run_dir}: disk full / file too large while writing the run ({reason}); free space "
                         f"and try again")
    return UserError(f"{run_dir}: disk full / file too large while writing the run ({reason}); free space (or "
                     f"raise the file-size limit), then '{PROG} resume {run_dir}' continues from its last checkpoint "
                     f"(or starts again if it has none)")


@contextlib.contextmanager
def _quiet_disk_full_threads():
    """While training, a writer thread (TensorBoard's) that dies of a full disk prints no traceback: the
    main thread meets the same error at its next write and reports it in one line (:meth:`Run.train`).
    Any other thread error still goes to the previous ``threading.excepthook``."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.exc_value, OSError) and args.exc_value.errno in DISK_FULL):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def run_overrides(sets: Iterable["Override | str"] = (), *, device: str | None = None,
                  out: str | Path | None = None) -> list[Any]:
    """The overrides of a new run in the order they apply: ``--set`` values, then ``--device`` (``run.device``)
    and ``--out`` (``run.out``), so the flags win over a ``--set`` of the same field."""
    overrides: list[Any] = list(sets)
    if device is not None:
        overrides.append(("run.device", device))
    if out is not None:
        overrides.append(("run.out", str(out)))
    return overrides


def plan_run(recipe_path: str | Path, registry: "Registry", sets: Iterable["Override | str"] = (), *,
             device: str | None = None, out: str | Path | None = None) -> tuple["Recipe", Path]:
    """The validated recipe of a new run and its run folder (``run.out`` with ``{name}`` = the recipe's file
    stem), checked before anything is built: :class:`UserError` for a folder that cannot be written, holds a
    run, or holds someone else's files."""
    from .build import check_run_dir, run_dir_for
    from .recipe import load_recipe

    recipe = load_recipe(recipe_path, registry, run_overrides(sets, device=device, out=out))
    out_dir = run_dir_for(recipe, Path(recipe_path).stem, str(recipe_path))
    check_run_dir(out_dir)
    refuse_if_held(out_dir)  # a folder another process writes now: name it, rather than "holds a run"
    refuse_occupied(out_dir)
    return recipe, out_dir


def refuse_occupied(out_dir: Path) -> None:
    """A run writes only into a new or empty folder: never over a run, never among someone's files. A folder
    with ``recipe.json`` is a run folder even without a checkpoint: ``resume`` continues (or restarts) it."""
    if any((out_dir / name).exists() for name in (RECIPE_JSON, METRICS_CSV, CHECKPOINT)):
        raise UserError(f"{out_dir}: already holds a run; continue it with '{PROG} resume {out_dir}', "
                        f"choose another folder with --out, or remove it")
    if out_dir.is_dir() and any(p.name != WRITER_LOCK for p in out_dir.iterdir()):
        raise UserError(f"{out_dir}: exists, is not empty and is not a run folder; choose another folder "
                        f"with --out (a new or empty one)")


def start_run(recipe: "Recipe", out_dir: Path | None, registry: "Registry", *,
              device: "str | torch.device | None" = None, progress: bool = True,
              trainer_recipe: "Recipe | None" = None, world_size: int = 1) -> Run:
    """Build the trainer of a new run and write ``recipe.json`` and ``plugins.json`` into ``out_dir`` (and
    ``data_parallel.json`` when ``world_size > 1``). ``out_dir=None`` builds a trainer that writes nothing
    (the ranks other than 0); ``trainer_recipe`` is what the trainer is built from when it differs from
    the recipe the folder holds (a rank's slice of the env batch)."""
    from .build import make_trainer, write_run_files

    trainer = make_trainer(trainer_recipe or recipe, out_dir, device if device is not None else recipe.run.device,
                           registry, progress=progress)  # writes nothing yet: a recipe that cannot build leaves no trace
    if out_dir is not None:
        _become_writer(out_dir, fresh=True)
        try:
            write_run_files(out_dir, recipe, registry)
            record_environment(out_dir, "run")
            # A checkpoint is written only after this copy, so a folder with a checkpoint always has it.
            write_json_atomic(out_dir / STARTED_RECIPE, recipe.model_dump(mode="json"))
            if world_size > 1:
                write_json_atomic(out_dir / DATA_PARALLEL_JSON, {"world_size": world_size})
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            raise disk_full_error(exc, out_dir) from None
    return Run(recipe, out_dir, trainer, str(out_dir / RECIPE_JSON) if out_dir is not None else "")


def saved_world_size(run_dir: Path) -> int:
    """How many ranks trained the run in ``run_dir`` (``data_parallel.json``; 1 when it has none)."""
    marker = run_dir / DATA_PARALLEL_JSON
    if not marker.is_file():
        return 1
    try:
        size = json.loads(marker.read_text(encoding="utf-8"))["world_size"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        size = None
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise UserError(f"{marker}: unreadable; expected {{\"world_size\": K}} with K >= 1")
    return size


def open_saved_run(run_dir: str | Path, registry: "Registry", *, world_size: int = 1) -> SavedRun:
    """Read and validate a run folder before anything is built, for ``world_size`` processes (1: a plain
    ``resume``; K: K torchrun ranks). One-line :class:`UserError` for a missing folder or ``recipe.json``, a
    run trained with a different number of ranks, unreadable JSON, or a recipe the installed plugins reject.
    A missing ``checkpoints/last.pt`` is not an error (:attr:`SavedRun.has_checkpoint`)."""
    from .recipe import validate_recipe

    run_dir = Path(run_dir)
    recipe_path = run_dir / RECIPE_JSON
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    if not recipe_path.is_file():
        raise UserError(f"{recipe_path}: no such file; is {run_dir} a run folder written by '{PROG} run'?")
    if (run_dir / CHECKPOINT).exists() and not (run_dir / CHECKPOINT).is_file():
        raise UserError(f"{run_dir / CHECKPOINT}: no such file (a folder is there); remove it to start the "
                        f"run again, or restore the checkpoint")
    saved = saved_world_size(run_dir)
    if saved != world_size:  # its checkpoint holds rank 0's slice of the env batch, or the whole batch
        if saved > 1:
            raise UserError(f"{run_dir}: trained data-parallel with {saved} ranks; resume it the same way: "
                            f"torchrun --nproc_per_node={saved} -m mbmix_fw resume {run_dir}")
        raise UserError(f"{run_dir}: trained in one process; resume it without torchrun: {PROG} resume {run_dir}")
    try:
        data = json.loads(recipe_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{recipe_path}: not valid JSON: {exc}") from None
    return SavedRun(run_dir, validate_recipe(data, registry, str(recipe_path)), str(recipe_path), saved)


def resume_run(saved: SavedRun, registry: "Registry", *, device: "str | torch.device | None" = None,
               progress: bool = True, trainer_recipe: "Recipe | None" = None, write: bool = True) -> Run:
    """Build the saved run's trainer and restore ``checkpoints/last.pt`` into it. ``recipe.json`` is
    compared with the recipe the run started with and the checkpoint is read and checked first, so an
    edit the checkpoint cannot honour or a corrupt file fails before anything is built or written;
    ``write=False`` for a rank that writes nothing; ``trainer_recipe`` as in :func:`start_run`.

    A folder without a checkpoint (the run stopped before its first one) starts again from iteration 0:
    the leftovers of the stopped run (``metrics.csv``, ``tb/``) are removed and the run is started as
    ``mbmix-fw run`` would start it, from its ``recipe.json`` (edits included: nothing was trained yet)."""
    from ..training.checkpoint import read_checkpoint, restore_checkpoint
    from .build import make_trainer
    from .resumable import refuse_unresumable

    if saved.has_checkpoint:  # recipe edits are refused before anything, the lock included, is touched
        refuse_unresumable(saved.recipe.model_dump(mode="json"), saved.run_dir, saved.source)
    if write:  # before reading: the checkpoint read is the one the resumed run continues from
        _become_writer(saved.run_dir, fresh=False)
    if not saved.has_checkpoint:
        if write:
            remove_training_outputs(saved.run_dir)
        run = start_run(saved.recipe, saved.run_dir if write else None, registry, device=device, progress=progress,
                        trainer_recipe=trainer_recipe, world_size=saved.world_size)
        return attrs.evolve(run, source=saved.source, started_afresh=True)
    state = read_checkpoint(saved.checkpoint)
    out_dir = saved.run_dir if write else None
    trainer = make_trainer(trainer_recipe or saved.recipe, out_dir,
                           device if device is not None else saved.recipe.run.device, registry, progress=progress)
    restore_checkpoint(trainer, state, saved.checkpoint, saved.source)
    if out_dir is not None:
        record_environment(out_dir, "resume")
    return Run(saved.recipe, out_dir, trainer, saved.source)


def _become_writer(out_dir: Path, *, fresh: bool) -> None:
    """Hold ``out_dir``'s writer lock (:mod:`~mbmix_fw.training.folder_lock`) before anything is written; a
    new run (``fresh``) then checks again that no run appeared since :func:`plan_run` looked: another
    process may have trained one to the end in between."""
    hold_folder(out_dir)
    if fresh and (out_dir / CHECKPOINT).exists():
        release_folder(out_dir)
        raise UserError(f"{out_dir}: already holds a run (written while this one started); continue it with "
                        f"'{PROG} resume {out_dir}', choose another folder with --out, or remove it")


def summary_line(out_dir: Path, final: dict[str, float]) -> str:
    """``run finished: DIR  eval/initial_return=…  eval/return=…``: what ``run`` and ``resume`` print last."""
    shown = {k: final[k] for k in ("eval/initial_return", "eval/return") if k in final}
    values = "  ".join(f"{k}={v:.4g}" for k, v in shown.items())
    return f"run finished: {out_dir}  {values}".rstrip()


def already_finished_line(run: Run) -> str:
    """What ``resume`` of a finished run prints (exit 0: the run is complete, which is what was wanted).
    It names the one field to raise and, since the advice invites editing ``recipe.json``, every field a
    resume honours (:data:`~mbmix_fw.building.resumable.RESUMABLE`): any other edit is refused."""
    from .resumable import resumable_fields

    settings = run.recipe.run
    only = f"(a resume honours changes to {resumable_fields()} only)"
    if settings.env_steps and run.trainer.env_steps >= settings.env_steps:
        return (f"{run.out_dir}: already finished ({run.trainer.env_steps} of {settings.env_steps} env steps); "
                f"nothing to resume. To train longer, raise run.env_steps in {run.source} and resume again "
                f"{only}")
    return (f"{run.out_dir}: already finished ({run.trainer.iteration} of {settings.iterations} "
            f"iterations); nothing to resume. To train longer, raise run.iterations in {run.source} and "
            f"resume again {only}")


__all__ = ["DISK_FULL", "Run", "SavedRun", "already_finished_line", "disk_full_error", "open_saved_run", "plan_run",
           "refuse_occupied", "resume_run", "run_overrides", "saved_world_size", "start_run", "summary_line"]
