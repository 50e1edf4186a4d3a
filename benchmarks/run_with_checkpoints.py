"""Train a recipe like ``mbmix-fw run`` and keep a copy of the checkpoint at chosen iterations
(``checkpoints/it{N}.pt``), so ``mbmix-fw diagnose gradients RUN --checkpoint RUN/checkpoints/it{N}.pt`` can
measure the same run early, midway and late (a run folder otherwise keeps only ``last.pt``).

    python benchmarks/run_with_checkpoints.py recipes/cloth_mix.toml --out runs/cm --at 10 20 40 [--set k=v ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mbmix_fw as mb
from mbmix_fw.building.runs import plan_run, start_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--out", required=True)
    parser.add_argument("--at", type=int, nargs="+", required=True, help="iterations whose checkpoint to keep")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value")
    args = parser.parse_args(argv)
    registry = mb.default_registry()
    recipe, out_dir = plan_run(args.recipe, registry, args.sets, out=args.out)
    run = start_run(recipe, out_dir, registry, progress=False)
    trainer, keep = run.trainer, set(args.at)
    plugin_hooks = trainer.hooks  # plugins' own event hooks keep receiving the events

    class KeepCheckpoints:
        """Writes ``it{N}.pt`` through the trainer's own (atomic, finite-checked) checkpoint writer."""

        def on_iteration_end(self, run_dir, iteration, metrics):
            if iteration in keep:
                trainer.save_checkpoint(Path(run_dir) / "checkpoints" / f"it{iteration}.pt")
            if plugin_hooks is not None:
                plugin_hooks.on_iteration_end(run_dir=run_dir, iteration=iteration, metrics=metrics)

        def on_run_end(self, run_dir, metrics):
            if plugin_hooks is not None:
                plugin_hooks.on_run_end(run_dir=run_dir, metrics=metrics)

    trainer.hooks = KeepCheckpoints()
    final = run.train()
    print(f"{out_dir}: eval/return {final.get('eval/return')}, kept "
          f"{sorted(p.name for p in (out_dir / 'checkpoints').glob('it*.pt'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
