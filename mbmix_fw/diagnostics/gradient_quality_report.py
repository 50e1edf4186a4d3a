"""``mbmix-fw diagnose gradients`` around the instrument (:mod:`.gradient_quality`): a saved run loaded, the
instrument run at its policy, its rows as a table, a plot, and a JSON file."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from .figures import save_figure
from .gradient_quality import GradientQuality, QualitySettings


def quality_table(result: dict[str, Any]) -> str:
    """The rows as an aligned plain-text table (``mbmix-fw diagnose gradients`` prints it), then ``J(θ)``,
    η, the reference and each row's note."""
    def number(value: Any, fmt: str = ".3g") -> str:
        return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

    headers = ["estimator", "steps", "VJPs", "pair cos", "ref cos", "ref cos 1", "ΔJ", "± s.e.", "ΔJ/1k calls"]
    body = [[r["label"], number(r["sim_steps"], ".0f"), number(r["sim_vjps"], ".0f"), number(r["pair_cosine"]),
             number(r["ref_cosine"]), number(r["ref_cosine_each"]), number(r["delta_j"]), number(r["delta_j_se"]),
             "∞ (no sim call)" if r["delta_j_per_1k_calls"] is None else number(r["delta_j_per_1k_calls"])]
            for r in result["rows"]]
    widths = [max(len(line[i]) for line in [headers, *body]) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [headers, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    s = result["settings"]
    lines.append(f"J(θ) = {result['j0']:.4g} over {s['eval_episodes']} deterministic episodes; "
                 f"η = {s['eta']:.3g}; {s['samples']} samples each; {result['reference_note']}")
    lines += [f"note: {r['label']}: {r['note']}" for r in result["rows"] if r["note"]]
    return "\n".join(lines)


def plot_quality(result: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """PNG: ΔJ ± s.e. against simulator calls per sample (left), cosines per estimator (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for r in rows:
        calls = r["sim_steps"] + r["sim_vjps"]
        left.errorbar([max(calls, 1.0)], [r["delta_j"]], yerr=[r["delta_j_se"]], fmt="o", capsize=3)
        left.annotate(r["label"], (max(calls, 1.0), r["delta_j"]), fontsize=7, xytext=(4, 4),
                      textcoords="offset points")
    left.axhline(0.0, color="k", lw=0.8)
    left.set_xscale("log")
    left.set_xlabel("simulator calls per sample (steps + VJPs; 1 = none)")
    left.set_ylabel(f"ΔJ = J(θ + η ĝ/|ĝ|) − J(θ), η = {result['settings']['eta']:.3g}")
    left.grid(alpha=0.3)
    xs = range(len(rows))
    nan = float("nan")
    right.bar([x - 0.2 for x in xs], [nan if r["pair_cosine"] is None else r["pair_cosine"] for r in rows],
              width=0.4, label="between samples")
    right.bar([x + 0.2 for x in xs], [nan if r["ref_cosine"] is None else r["ref_cosine"] for r in rows],
              width=0.4, label="sample mean to reference")
    right.set_xticks(list(xs), [r["label"] for r in rows], rotation=40, ha="right", fontsize=7)
    right.set_ylabel("cosine")
    right.axhline(0.0, color="k", lw=0.8)
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    return save_figure(fig, path, title or "gradient quality at a saved policy")


def load_run_trainer(run_dir: str | Path, registry, *, checkpoint: str | Path | None = None,
                     device: str | None = None):
    """``(saved run, trainer)``: the run folder's recipe built by the building layer (writing nothing), its
    checkpoint (``checkpoints/last.pt``, or ``checkpoint``) loaded. One-line :class:`UserError` for a folder
    that is not a run, or a checkpoint file that is missing."""
    from ..building.build import make_trainer
    from ..building.runs import open_saved_run

    saved = open_saved_run(run_dir, registry)
    path = saved.checkpoint if checkpoint is None else Path(checkpoint)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    trainer = make_trainer(saved.recipe, None, device if device is not None else saved.recipe.run.device,
                           registry, progress=False)
    trainer.load_checkpoint(path)
    return saved, trainer


def gradient_quality_from_run(run_dir: str | Path, registry, settings: QualitySettings = QualitySettings(), *,
                              checkpoint: str | Path | None = None, device: str | None = None,
                              json_out: str | Path | None = None, png_out: str | Path | None = None,
                              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``mbmix-fw diagnose gradients RUN_DIR``: the instrument at the run's saved policy (module docstring);
    writes ``json_out`` and ``png_out`` when given and returns the result."""
    saved, trainer = load_run_trainer(run_dir, registry, checkpoint=checkpoint, device=device)
    result = GradientQuality(trainer, registry, settings).measure(progress)
    result["settings"].update({"run_dir": str(saved.run_dir), "env": saved.recipe.env.kind,
                               "checkpoint": str(checkpoint or saved.checkpoint)})
    if json_out is not None:
        path = Path(json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    if png_out is not None:
        plot_quality(result, png_out, title=f"{saved.recipe.env.kind} at iteration {trainer.iteration}: "
                                            f"{settings.samples} samples per estimator")
    return result
