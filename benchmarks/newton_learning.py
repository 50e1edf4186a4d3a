"""SHAC on a Newton robot: run a recipe (default ``recipes/hopper_newton_shac.toml``) for several seeds and summarize.

    python benchmarks/newton_learning.py --seeds 0 1 2 3 4 --jobs 2 --out runs/hopper_newton_shac
    python benchmarks/newton_learning.py --summarize-only --out runs/hopper_newton_shac
    python benchmarks/newton_learning.py --recipe recipes/humanoid_newton_shac.toml \
        --set run.iterations=100 --out runs/humanoid_newton_shac

Each run: the recipe with ``run.seed``, ``run.threads = 1`` and any ``--set`` overrides. Per seed it prints the
return of the initial policy (``eval/return`` at iteration 0), the final one, the score (mean of the last 3
evaluations, the project's convention) and the run's wall time; then the IQM of initial and final scores with
95 % stratified-bootstrap intervals (``mb.summarize_scores``).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import mbmix_fw as mb

sys.path.insert(0, str(Path(__file__).resolve().parent))  # study_jobs, a sibling module
from study_jobs import finished, report, run_jobs, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "hopper_newton_shac.toml"


def run(seed: int, out: Path, recipe: Path = RECIPE, sets: tuple[str, ...] = ()) -> dict:
    """One seed through the studies' shared ``train`` (one torch thread, an unfinished folder started over);
    a failed run is named and the script exits 1 (``{"error": ...}``)."""
    error = train(recipe, out / f"seed{seed}", seed, ["run.threads=1", *sets])
    return {"seed": seed} if error is None else {"seed": seed, "error": error}


def summary(folder: Path) -> dict[str, float]:
    with open(folder / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    returns = [float(r["eval/return"]) for r in rows if r["eval/return"]]
    return {"initial": returns[0], "final": returns[-1], "score": sum(returns[-3:]) / 3,
            "wall_s": float(rows[-1]["time/wall_s"]), "env_steps": float(rows[-1]["env/steps"])}


def table(rows: list[dict]) -> str:
    """One line per finished seed, then the IQM of the initial and final scores with their intervals."""
    lines = ["| seed | initial eval/return | final eval/return | score (last 3) | wall s | env steps |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['initial']:.1f} | {r['final']:.1f} | {r['score']:.1f} | {r['wall_s']:.0f} "
              f"| {r['env_steps']:.0f} |" for r in rows]
    stats = mb.summarize_scores({"initial": [r["initial"] for r in rows], "score": [r["score"] for r in rows]})
    lines += [f"{name}: IQM {s} over {s.runs} seeds" for name, s in stats.items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "hopper_newton_shac")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every run (repeatable)")
    parser.add_argument("--summarize-only", action="store_true")
    args = parser.parse_args()
    results = [] if args.summarize_only else run_jobs(
        [(s,) for s in args.seeds], lambda s: run(s, args.out, args.recipe.resolve(), tuple(args.sets)), args.jobs)
    folders = sorted((p for p in args.out.glob("seed*") if finished(p)), key=lambda p: int(p.name[4:]))
    rows = [{"seed": int(p.name[4:]), **summary(p)} for p in folders]
    failed = [r for r in results if "error" in r]
    code = report([*failed, *rows], table, lambda r: f"seed {r['seed']}", json_path=None, markdown_path=None)
    return code if rows else 1  # nothing to summarise is a failure too


if __name__ == "__main__":
    sys.exit(main())
