"""What each ``mbmix-fw`` command does once its arguments are parsed (:mod:`.cli` parses them and turns
errors into exit codes). Every import stays inside its command, so ``plugins`` and ``validate`` never load
the trainer, matplotlib or anything a plugin keeps behind its factories."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import PROG, UserError

if TYPE_CHECKING:
    from ..building.registry import Registry
    from ..building.runs import Run


class Registries:
    """Loads the installed plugins once, on first use, and warns about broken ones (once)."""

    def __init__(self, given: "Registry | None", warn: bool = True):
        self._registry, self._warn = given, warn

    def get(self, warn: bool = True) -> "Registry":
        if self._registry is None:
            from ..building.registry import load_registry

            self._registry = load_registry()
            if warn and self._warn:
                for failure in self._registry.failures:
                    print(f"{PROG}: warning: {failure.message}", file=sys.stderr)
        return self._registry


def cmd_run(args: argparse.Namespace, registries: Registries) -> int:
    from ..building.runs import plan_run, start_run

    registry = registries.get()
    if args.rank is not None:
        from ..distributed.ddp import run_data_parallel

        final, run = run_data_parallel(args.recipe, registry, sets=args.set, device=args.device, out=args.out,
                                       progress=not args.no_progress)
    else:
        recipe, out_dir = plan_run(args.recipe, registry, args.set, device=args.device, out=args.out)
        run = start_run(recipe, out_dir, registry, progress=not args.no_progress)
        final = run.train()
    return _finish(args, run, final)


def cmd_resume(args: argparse.Namespace, registries: Registries) -> int:
    from ..building.runs import open_saved_run, resume_run

    registry = registries.get()
    if args.rank is not None:
        from ..distributed.ddp import resume_data_parallel

        final, run = resume_data_parallel(args.run_dir, registry, device=args.device,
                                          progress=not args.no_progress)
    else:
        run = resume_run(open_saved_run(args.run_dir, registry), registry, device=args.device,
                         progress=not args.no_progress)
        if run.started_afresh:
            _note_fresh_start(run)
        final = None if run.finished else run.train()
    return _finish(args, run, final)


def _note_fresh_start(run: "Run") -> None:
    """A resumed folder without a checkpoint starts again; say so, since nothing of it is kept."""
    from ..training.run_folder import CHECKPOINT

    print(f"{PROG}: {run.out_dir / CHECKPOINT}: none yet (the run stopped before its first checkpoint); "
          f"starting it again from iteration 0", file=sys.stderr)


def _finish(args: argparse.Namespace, run: "Run", final: dict[str, float] | None) -> int:
    """Print the run's last line (rank 0 only): its summary, or that a resumed run was already finished."""
    from ..building.runs import already_finished_line, summary_line

    if not args.rank:
        print(already_finished_line(run) if final is None else summary_line(run.out_dir, final))
    return 0


def cmd_validate(args: argparse.Namespace, registries: Registries) -> int:
    from ..errors import RecipeError
    from ..building.recipe import load_recipe

    registry = registries.get()
    problems: list[str] = []
    for path in args.recipes:
        try:
            load_recipe(path, registry, args.set)
        except RecipeError as exc:
            problems.extend(exc.problems)
        else:
            print(f"{path}: ok")
    if problems:
        raise RecipeError(problems)
    return 0


def cmd_report(args: argparse.Namespace, registries: Registries) -> int:
    from .report import Score, format_group_table, write_report

    score = Score.parse(args.score)
    path, groups = write_report(args.run_dirs, args.out, metric=args.metric, x=args.x, group=args.group,
                                score=score)
    if groups:
        print(format_group_table(groups, score))
    print(f"wrote {path}")
    return 0


def cmd_render(args: argparse.Namespace, registries: Registries) -> int:
    from .render import render_run

    print(f"wrote {render_run(args.run_dir, args.out, frames=args.frames, registry=registries.get())}")
    return 0


def cmd_sweep(args: argparse.Namespace, registries: Registries) -> int:
    from ..distributed.sweep import sweep_command  # Ray is imported there, only when a sweep runs

    return sweep_command(args.recipe, registries.get(), grid=args.grid, seeds=args.seeds, name=args.sweep_name,
                         address=args.address, cpus_per_trial=args.cpus_per_trial,
                         gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
                         overrides=args.set)


def cmd_diagnose_variance(args: argparse.Namespace, registries: Registries) -> int:
    from ..building.build import resolve_device
    from ..building.recipe import load_recipe

    registry = registries.get()
    recipe = load_recipe(args.recipe, registry, args.set)
    from ..diagnostics.variance import variance_from_recipe  # written separately; imported only when asked for

    device = resolve_device(args.device if args.device is not None else recipe.run.device)
    options: dict[str, Any] = {"progress": lambda message: print(message, file=sys.stderr)}
    if args.checkpoint is not None:
        if not Path(args.checkpoint).is_file():
            raise UserError(f"{args.checkpoint}: no such checkpoint file")
        options["checkpoint"] = args.checkpoint
    if args.critic_iterations is not None:
        options["critic_iterations"] = args.critic_iterations
    json_file = None if args.json == "-" else args.json
    rows = variance_from_recipe(recipe, registry, args.samples, json_file, args.png, device, **options)
    from ..diagnostics.variance import variance_table

    return _show_diagnosis(rows, variance_table, args)


def cmd_diagnose_gradients(args: argparse.Namespace, registries: Registries) -> int:
    from ..diagnostics.gradient_quality import QualitySettings
    from ..diagnostics.gradient_quality_report import gradient_quality_from_run, quality_table

    options: dict[str, Any] = {"samples": args.samples}
    if args.eta is not None:
        options["eta"] = args.eta
    if args.estimators:
        options["estimators"] = tuple(args.estimators)
    settings = QualitySettings(**options)
    result = gradient_quality_from_run(args.run_dir, registries.get(), settings, checkpoint=args.checkpoint,
                                       device=args.device, json_out=None if args.json == "-" else args.json,
                                       png_out=args.png, progress=lambda message: print(message, file=sys.stderr))
    return _show_diagnosis(result, quality_table, args)


def _show_diagnosis(result: Any, table: Callable[[Any], str], args: argparse.Namespace) -> int:
    """A diagnosis on stdout: its table, or its JSON with ``--json -``; then the files it wrote (on stderr
    when stdout holds the JSON)."""
    json_to_stdout = args.json == "-"
    print(json.dumps(result, indent=2, ensure_ascii=False, default=str) if json_to_stdout else table(result))
    for path in (None if json_to_stdout else args.json, args.png):
        if path is not None:
            print(f"wrote {path}", file=sys.stderr if json_to_stdout else sys.stdout)
    return 0
