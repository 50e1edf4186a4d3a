"""Does the gradient-quality instrument's ΔJ say what real updates do? (issue 25, item 1's goal check)

``mbmix-fw diagnose gradients`` scores each estimator by ``ΔJ = J(θ + η·ĝ/‖ĝ‖) − J(θ)`` of *one* step along
*one* sample, averaged over samples. An update rule follows several samples in a row, each drawn at the
parameters the previous step left. If the instrument's one-step ΔJ is to rank estimators, its sign and
order must agree with that. At one checkpoint this script:

1. runs the whole instrument (every estimator the run supports, ``--samples`` each) and times it in CPU
   seconds (the goal: ≤ 2 CPU-minutes on a cloth_mix checkpoint);
2. for each of the chosen estimators (``--rows``, labels of the instrument's table; default: SHAC at its
   shortest window, the recipe's MIX, BPTT), takes ``--steps`` real steps ``θ ← θ + η·ĝ_t/‖ĝ_t‖`` with a
   fresh sample ``ĝ_t`` at each step's parameters (normalised-gradient steps of the same η as the
   instrument: what the instrument extrapolates from; fresh seeds, disjoint from the instrument's), then
   ``J`` after them minus ``J(θ)``; repeated ``--repeats`` times from θ (mean ± s.e.), θ restored after
   each;
3. prints both per estimator, whether their signs agree, and whether every pair of estimators is ordered
   the same way by both.

Run: ``python benchmarks/gradient_quality_check.py RUN_DIR [--samples 8] [--steps 3] [--repeats 3]
[--eta 0.02] [--json out.json]`` on a run folder of ``mbmix-fw run recipes/cloth_mix.toml``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import time

import torch

from mbmix_fw.building.registry import default_registry
from mbmix_fw.diagnostics.gradient_quality import GradientQuality, QualitySettings
from mbmix_fw.diagnostics.gradient_quality_report import load_run_trainer, quality_table

REAL_SEED_BASE = 500_000  # the real updates' samples: seeds far from the instrument's (0 … K-1)


def real_updates(instrument: GradientQuality, candidate, steps: int, repeats: int, j0: float) -> list[float]:
    """``J`` after ``steps`` normalised steps along fresh samples, minus ``j0``, for each repeat."""
    saved = instrument.snapshot()
    gains = []
    try:
        for r in range(repeats):
            for s in range(steps):
                instrument.step_along(instrument.sample(candidate, REAL_SEED_BASE + 1000 * r + s).gradient)
            gains.append(instrument.evaluate() - j0)
            instrument.restore(saved)
    finally:
        instrument.restore(saved)
    return gains


def default_rows(instrument: GradientQuality) -> list[str]:
    shac = [c for c in instrument.candidates if c.kind == "shac"]
    picked = [min(shac, key=lambda c: c.horizon)] if shac else []
    picked += [c for c in instrument.candidates if c.kind in ("mix", "bptt")]
    return [c.label for c in picked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eta", type=float, default=0.02)
    parser.add_argument("--rows", nargs="+", help="labels of the instrument's rows to check (default: see doc)")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()

    registry = default_registry()
    _, trainer = load_run_trainer(args.run_dir, registry)
    instrument = GradientQuality(trainer, registry, QualitySettings(samples=args.samples, eta=args.eta))
    cpu, wall = time.process_time(), time.perf_counter()
    result = instrument.measure()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(quality_table(result))
    print(f"instrument: {cpu:.1f} CPU-s, {wall:.1f} s wall, {len(result['rows'])} estimators × {args.samples} "
          f"samples (iteration {trainer.iteration}, torch threads {torch.get_num_threads()})")

    by_label = {c.label: c for c in instrument.candidates}
    rows = {r["label"]: r for r in result["rows"]}
    chosen = args.rows or default_rows(instrument)
    j0 = result["j0"]
    checked = []
    for label in chosen:
        gains = real_updates(instrument, by_label[label], args.steps, args.repeats, j0)
        mean = sum(gains) / len(gains)
        se = (math.sqrt(sum((g - mean) ** 2 for g in gains) / (len(gains) - 1) / len(gains))
              if len(gains) > 1 else float("nan"))
        checked.append({"label": label, "instrument_delta_j": rows[label]["delta_j"],
                        "instrument_se": rows[label]["delta_j_se"], "real_delta_j": mean, "real_se": se,
                        "real_gains": gains, "sign_agrees": (rows[label]["delta_j"] > 0) == (mean > 0)})
    print(f"\nreal updates: {args.steps} normalised steps of η = {args.eta} along fresh samples, "
          f"{args.repeats} repeats from θ (J(θ) = {j0:.4g})")
    width = max(len(c["label"]) for c in checked)
    print(f"{'estimator':<{width}}  {'instrument ΔJ (1 step)':>24}  {'real ΔJ after steps':>22}  sign agrees")
    for c in checked:
        print(f"{c['label']:<{width}}  {c['instrument_delta_j']:>+14.3f} ± {c['instrument_se']:<7.3f}  "
              f"{c['real_delta_j']:>+12.3f} ± {c['real_se']:<7.3f}  {'yes' if c['sign_agrees'] else 'NO'}")
    pairs = []
    for a, b in itertools.combinations(checked, 2):
        by_instrument = a["instrument_delta_j"] > b["instrument_delta_j"]
        same = by_instrument == (a["real_delta_j"] > b["real_delta_j"])
        pairs.append({"pair": [a["label"], b["label"]], "order_agrees": same})
        print(f"order {a['label']} vs {b['label']}: {'agrees' if same else 'DISAGREES'}")
    print(f"signs agree: {sum(c['sign_agrees'] for c in checked)}/{len(checked)}; "
          f"pair orders agree: {sum(p['order_agrees'] for p in pairs)}/{len(pairs)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"instrument": result, "cpu_s": cpu, "wall_s": wall, "checked": checked, "pairs": pairs,
                       "steps": args.steps, "repeats": args.repeats}, fh, indent=2, ensure_ascii=False, default=str)


if __name__ == "__main__":
    main()
