"""``mbmix-fw``: run, validate, resume and report on recipes; list plugins; diagnose estimators.

Exit codes: 0 success, 2 user error (bad recipe, missing file, unknown plugin: one line per problem,
``mbmix-fw: error: …``, no traceback), 1 internal error. ``-v`` or ``MBMIX_FW_DEBUG=1`` shows tracebacks.

This module parses the command line and turns errors into exit codes; what each command does is in
:mod:`.handlers` (``mbmix-fw plugins``: :mod:`.plugin_listing`), whose imports stay inside the commands.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import PROG, MbmixError, UserError
from . import handlers, plugin_listing

if TYPE_CHECKING:
    from ..building.registry import Registry


def console_main() -> int:
    """The ``mbmix-fw`` command and ``python -m mbmix_fw``: :func:`main`; in a process that torchrun started
    as one of several ranks, ``run`` and ``resume`` train data-parallel (:mod:`mbmix_fw.distributed.ddp`),
    so ``torchrun ... $(which mbmix-fw) run`` does not start K independent runs writing one folder."""
    from ..distributed.ddp import launched_by_torchrun, process_rank

    return main(rank=process_rank()) if launched_by_torchrun() else main()


def main(argv: Sequence[str] | None = None, *, registry: "Registry | None" = None, rank: int | None = None) -> int:
    """Run the CLI; returns the exit code. Tests pass an explicit ``registry`` (else: installed plugins).

    ``rank`` is set in a process torchrun started (one of several ranks): ``run`` and ``resume`` then train
    data-parallel, and only rank 0 prints plugin warnings, user errors and the summary."""
    parser = _parser()
    args = parser.parse_args(argv)
    args.rank = rank
    asked = getattr(args, "verbose_errors", False) or getattr(args, "verbose", False)
    debug = bool(asked) or os.environ.get("MBMIX_FW_DEBUG", "") not in ("", "0")
    try:
        return args.command(args, handlers.Registries(registry, warn=not rank))
    except UserError as exc:
        if debug:
            traceback.print_exc()
        if not rank:  # every rank meets the same error: one copy is enough
            for line in str(exc).splitlines() or [type(exc).__name__]:
                print(f"{PROG}: error: {line}", file=sys.stderr)
        return 2
    except MbmixError as exc:  # raised on purpose, not a user's mistake (e.g. training diverged): exit 1
        if debug:
            traceback.print_exc()
        print(f"{PROG}: error: {(str(exc).splitlines() or [type(exc).__name__])[0]}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        from ..building.runs import DISK_FULL, disk_full_error

        if exc.errno not in DISK_FULL:
            return _internal_error(exc, debug)
        # no room while writing recipe.json, plugins.json, a report, …: the machine's state, not a bug
        if debug:
            traceback.print_exc()
        if not rank:
            print(f"{PROG}: error: {disk_full_error(exc, None)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        return _internal_error(exc, debug)


def _internal_error(exc: Exception, debug: bool) -> int:
    """``internal error: TYPE: first line`` (exit 1); the traceback with ``-v``."""
    if debug:
        traceback.print_exc()
    first = (str(exc).splitlines() or [""])[0]
    print(f"{PROG}: internal error: {type(exc).__name__}: {first}", file=sys.stderr)
    if not debug:
        print(f"{PROG}: run with -v (or MBMIX_FW_DEBUG=1) for the traceback", file=sys.stderr)
    return 1


# ---- argument parsing ----
def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text}")
        return value

    return parse


_positive_int = _int_at_least(1)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", dest="verbose_errors", action="store_true",
                        default=argparse.SUPPRESS, help="show tracebacks (also MBMIX_FW_DEBUG=1)")
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common],
        description="First-order model-based RL (MB-MIX, SHAC, BPTT) from TOML recipes.")
    sub = parser.add_subparsers(dest="name", required=True, metavar="COMMAND")

    def command(name: str, func: Any, help: str, inherit: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common] if inherit else [], help=help, description=help)
        p.set_defaults(command=func)
        return p

    def overrides(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a recipe value (TOML syntax; repeatable), e.g. --set estimator.lam=0.95")

    devices = ["auto", "cpu", "cuda"]
    p = command("run", handlers.cmd_run, "train the recipe; writes the run folder (run.out, or --out)")
    p.add_argument("recipe", metavar="RECIPE")
    overrides(p)
    p.add_argument("--out", help="run folder (overrides run.out; {name} is the recipe's file stem)")
    p.add_argument("--device", choices=devices, help="overrides run.device")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (on a terminal) or progress lines (elsewhere); warnings still show")

    p = command("validate", handlers.cmd_validate, "check recipes without running them (writes nothing)")
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    overrides(p)

    p = command("plugins", plugin_listing.cmd_plugins,
                "list installed plugins, their kinds and any that failed to load",
                inherit=False)
    p.add_argument("--json", action="store_true", help="one JSON object per registered component")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show each config's fields, defaults and docs (and tracebacks)")

    p = command("resume", handlers.cmd_resume, "continue a run from RUN_DIR/checkpoints/last.pt")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--device", choices=devices, help="overrides the recipe's run.device")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (on a terminal) or progress lines (elsewhere); warnings still show")

    p = command("report", handlers.cmd_report, "plot learning curves from run folders' metrics.csv; with groups, "
                "compare them: the IQM of a score over seeds with its bootstrap interval")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR|NAME=RUN_DIR[,RUN_DIR...]",
                   help="run folders, sweep folders (their trials), or named groups of them (a RUN_DIR may be a "
                        "glob: shac='runs/shac_s*'); a named group implies --group")
    p.add_argument("--out", metavar="PNG",
                   help="PNG to write (default: RUN_DIR/learning_curves.png for one run; for several, "
                        "learning_curves.png in the deepest folder that holds them all, e.g. the sweep folder)")
    p.add_argument("--metric", default="eval/return", help="column to plot (default: %(default)s)")
    p.add_argument("--x", default="iteration", help="column for the x axis (default: %(default)s)")
    p.add_argument("--group", action="store_true",
                   help="group runs (named groups, or runs that differ only in run.seed): draw each as mean ± std "
                        "and print and draw each group's IQM of the --score with its 95%% stratified-bootstrap "
                        "interval over runs")
    p.add_argument("--score", default="eval/return:3", metavar="METRIC[:LAST]",
                   help="a run's score for --group: the mean of its last LAST logged METRIC values after "
                        "iteration 0 (default: %(default)s)")

    p = command("render", handlers.cmd_render, "draw the env under the initial and the trained policy (PNG)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="PNG to write (default: RUN_DIR/render.png)")
    p.add_argument("--frames", type=_positive_int, default=4, help="frames per policy (default: %(default)s)")

    p = command("sweep", handlers.cmd_sweep, "train every grid point x seed of a recipe on Ray (extra [ray]); "
                "rerun to resume")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--grid", action="append", default=[], metavar="SECTION.KEY=V1,V2,...",
                   help="values to sweep (repeatable: the grid is every combination)")
    p.add_argument("--seeds", help="e.g. 0-4 or 0,2,5 (default: the recipe's run.seed)")
    p.add_argument("--name", dest="sweep_name", help="sweep folder name (default: RECIPE-STEM_sweep)")
    p.add_argument("--address", help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: a local Ray)")
    p.add_argument("--cpus-per-trial", type=float, metavar="C", help="CPUs (and torch threads) per trial")
    p.add_argument("--gpus-per-trial", type=float, metavar="G", help="GPUs per trial; fractions share a GPU")
    p.add_argument("--max-concurrent", type=_positive_int, metavar="K", help="at most K trials at once")
    overrides(p)

    p = command("diagnose", None, "diagnostics of estimators at fixed parameters")
    diag = p.add_subparsers(dest="diagnostic", required=True, metavar="DIAGNOSTIC")
    p = diag.add_parser("variance", parents=[common],
                        help="gradient variance (and bias, where known) of the recipe's estimator")
    p.set_defaults(command=handlers.cmd_diagnose_variance)
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--samples", type=_int_at_least(2), default=64,
                   help="gradient samples, at least 2 for a variance (default: %(default)s)")
    p.add_argument("--json", metavar="OUT",
                   help="also write the results as JSON to OUT ('-': print JSON instead of the table)")
    p.add_argument("--png", metavar="OUT", help="write a plot")
    p.add_argument("--device", choices=devices, help="overrides run.device")
    p.add_argument("--checkpoint", metavar="PT", help="measure at a trained policy (a run's checkpoints/last.pt)")
    p.add_argument("--critic-iterations", type=_positive_int, metavar="N",
                   help="TD(λ) windows to fit the critic to the fixed policy")
    overrides(p)
    p = diag.add_parser("gradients", parents=[common],
                        help="what each estimator's gradient is worth at a run's saved policy: cosines, "
                             "improvement ΔJ of a step along it, simulator calls")
    p.set_defaults(command=handlers.cmd_diagnose_gradients)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'run' (recipe.json, checkpoints/)")
    p.add_argument("--checkpoint", metavar="PT", help="another checkpoint of the run (default: checkpoints/last.pt)")
    p.add_argument("--samples", type=_int_at_least(2), default=8,
                   help="gradient samples per estimator, at least 2 (default: %(default)s)")
    p.add_argument("--estimators", nargs="+", metavar="KIND",  # checked by QualitySettings (no torch to parse)
                   help="which estimators: shac, mix, bptt, model_window, model_branches, jacobian_blend "
                        "(default: all the run supports)")
    p.add_argument("--eta", type=float, metavar="η", help="step length of θ + η·ĝ/|ĝ| (default: 0.02)")
    p.add_argument("--json", metavar="OUT",
                   help="also write the results as JSON to OUT ('-': print JSON instead of the table)")
    p.add_argument("--png", metavar="OUT", help="write a plot")
    p.add_argument("--device", choices=devices, help="overrides the run's run.device")
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
