"""One table from several ``mbmix-fw diagnose gradients --json`` files of the same run (early, mid, late
checkpoints): per estimator and checkpoint, ΔJ ± s.e., ΔJ per 1000 simulator calls and the reference cosine
of one sample; the best estimator per simulator call at each checkpoint is marked (only among those whose
step improves J: where none does, none is marked).

    python benchmarks/gradient_quality_table.py it10=benchmarks/gq_it10.json it30=benchmarks/gq_it30.json ...
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def table(named: list[tuple[str, dict]]) -> str:
    labels: list[str] = []
    for _, result in named:
        labels += [r["label"] for r in result["rows"] if r["label"] not in labels]
    head = "| estimator | " + " | ".join(f"{name}: ΔJ ± s.e. | {name}: ΔJ/1k calls | {name}: ref cos (1)"
                                         for name, _ in named) + " |"
    lines = [head, "|---|" + "---|---|---|" * len(named),
             "| J(θ) | " + " | ".join(f"{result['j0']:.2f} | | " for _, result in named) + " |"]
    best = {}
    for name, result in named:
        per_call = [r for r in result["rows"] if (r.get("delta_j_per_1k_calls") or 0) > 0]  # improving ones
        best[name] = max(per_call, key=lambda r: r["delta_j_per_1k_calls"])["label"] if per_call else None
    for label in labels:
        cells = []
        for name, result in named:
            row = next((r for r in result["rows"] if r["label"] == label), None)
            if row is None:
                cells.append("— | — | —")
                continue
            per = row.get("delta_j_per_1k_calls")
            per_text = "no sim call" if per is None else f"{per:+.3g}"
            if best[name] == label:
                per_text = f"**{per_text}**"
            cells.append(f"{row['delta_j']:+.3g} ± {row['delta_j_se']:.2g} | {per_text} | "
                         f"{row['ref_cosine_each']:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    named = []
    for arg in argv:
        name, _, path = arg.partition("=")
        named.append((name, json.loads(Path(path).read_text())))
    print(table(named))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
