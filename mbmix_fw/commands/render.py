"""``mbmix-fw render RUN_DIR``: frames of one evaluation episode under the initial and the trained policy.

Generic over envs: the env draws one state itself through an optional method ``draw(ax, state_row)`` (and
may name the matplotlib projection its axes need in ``draw_projection``, e.g. ``"3d"``). An env without
``draw`` is a user error.

The *initial* policy is rebuilt, not stored: a run's initialisation is a function of ``run.seed`` alone
(``build_components`` and the trainer seed every generator first), so building the trainer from the run's
``recipe.json`` gives exactly the policy that row 0 of ``metrics.csv`` evaluated. The *trained* policy (and
its observation statistics) comes from ``checkpoints/last.pt``. Both start from the same reset: the
evaluation generator of :class:`~mbmix_fw.training.evaluation.Evaluator`, so the pictures show the first evaluation episode.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import UserError
from ..training.evaluation import EVAL_SEED_OFFSET

if TYPE_CHECKING:
    from ..building.registry import Registry

RENDER_PNG = "render.png"


def render_run(run_dir: str | Path, out: str | Path | None = None, *, frames: int = 4,
               device: str = "cpu", registry: "Registry | None" = None) -> Path:
    """Draw ``frames`` states of one episode per policy (rows: initial, trained) into a PNG; returns its path."""
    from ..building.build import make_trainer
    from ..training.checkpoint import read_checkpoint
    from ..building.recipe import validate_recipe
    from ..building.registry import load_registry
    from ..training.run_folder import CHECKPOINT, RECIPE_JSON

    run_dir = Path(run_dir)
    recipe_path, checkpoint = run_dir / RECIPE_JSON, run_dir / CHECKPOINT
    for needed in (recipe_path, checkpoint):
        if not needed.is_file():
            raise UserError(f"{needed}: no such file; is {run_dir} a run folder written by 'mbmix-fw run'?")
    try:
        data = json.loads(recipe_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{recipe_path}: not valid JSON: {exc}") from None
    registry = registry if registry is not None else load_registry()
    recipe = validate_recipe(data, registry, str(recipe_path))
    state = read_checkpoint(checkpoint)  # checked as resume checks it, before anything is built

    initial = make_trainer(recipe, None, device, registry, progress=False)
    env = initial.env
    if not callable(getattr(env, "draw", None)):
        raise UserError(f"{run_dir}: env '{recipe.env.kind}' cannot draw itself (it has no draw(ax, state) "
                        f"method), so there is nothing to render; plot its curves with 'mbmix-fw report'")
    trained = make_trainer(recipe, None, device, registry, progress=False)
    trained.policy.load_state_dict(state["policy"])
    if trained.obs_norm is not None and state.get("obs_norm") is not None:
        trained.obs_norm.load_state_dict(state["obs_norm"])

    rows = [("initial policy", *_episode(initial, recipe.run.seed)),
            ("trained policy", *_episode(trained, recipe.run.seed))]
    path = Path(out) if out is not None else run_dir / RENDER_PNG
    _draw(env, rows, frames, path, title=f"{run_dir.resolve().name}: {recipe.env.kind}")
    return path


@torch.no_grad()
def _episode(trainer, seed: int) -> tuple[list[torch.Tensor], float]:
    """States ``s_0 … s_T`` of the first evaluation episode (env 0) and its return, deterministic policy."""
    env, device = trainer.env, trainer.device
    g = torch.Generator(device=device).manual_seed(seed + EVAL_SEED_OFFSET)  # the Evaluator's generator
    state = env.reset(trainer.run.eval_envs, g)
    states, total = [state[0].clone()], 0.0
    for _ in range(env.episode_length):
        action = trainer.policy(trainer.networks.normalize(env.observe(state)), deterministic=True)
        next_state = env.step(state, action, g)
        total += float(env.reward(state, action, next_state)[0])
        state = next_state
        states.append(state[0].clone())
        if bool(env.terminated(state)[0]):
            break
    return states, total


def _draw(env, rows, frames: int, path: Path, title: str) -> None:
    from matplotlib.figure import Figure  # Agg canvas: no display needed

    projection = getattr(env, "draw_projection", None)
    fig = Figure(figsize=(2.6 * frames, 5.4), layout="constrained")
    fig.suptitle(title)
    for r, (label, states, total) in enumerate(rows):
        picks = sorted({round(i * (len(states) - 1) / max(frames - 1, 1)) for i in range(frames)})
        for c, t in enumerate(picks):
            ax = fig.add_subplot(len(rows), frames, r * frames + c + 1, projection=projection)
            env.draw(ax, states[t])
            ax.set_title(f"{label}, t = {t}\n{ax.get_title()}", fontsize=8)
        fig.text(0.01, 1 - (r + 0.5) / len(rows), f"return {total:.3g}", rotation=90, va="center", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
