"""From a validated recipe to components, a trainer and a run folder."""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import torch

from ..contracts.context import BuildContext
from ..contracts.env import DiffEnv
from ..contracts.particles import checked_particle_layout
from ..errors import UserError
from ..contracts.estimator import GradientEstimator
from .recipe import Recipe
from .registry import Registry
from ..contracts.component import component_label
from ..contracts.scheduler import NO_METRICS, Scheduler
from ..contracts.world_model import WorldModel
from ..training.run_folder import PLUGINS_JSON, RECIPE_JSON, write_json_atomic

if TYPE_CHECKING:
    from ..training.trainer import Trainer

@attrs.frozen(eq=False)
class Components:
    """The four built components of a recipe (``world_model`` is ``None`` for model-free recipes)."""

    env: DiffEnv
    world_model: WorldModel | None
    estimator: GradientEstimator
    scheduler: Scheduler


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → cuda when available, else cpu. Asking for cuda without one is a user error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; expected auto, cpu or cuda") from None


def build_components(recipe: Recipe, registry: Registry, device: str | torch.device) -> Components:
    """Build env → world_model → estimator → scheduler; the world model's context carries the env.

    Global RNGs are seeded from ``run.seed`` first, so factories that initialise from torch's global
    generator (a plain ``nn.Linear``) build the same component for the same seed.
    """
    from ..training.setup import seed_everything

    seed_everything(recipe.run.seed)
    dtype = torch.float64 if recipe.run.dtype == "float64" else torch.float32  # "auto": envs build in float32
    ctx = BuildContext(device=resolve_device(device), seed=recipe.run.seed, dtype=dtype)
    env = registry.env.build(recipe.env, ctx)
    checked_particle_layout(env, recipe.env.kind)  # an env's declared layout must match its state
    ctx = ctx.with_env(env)
    world_model = registry.world_model.build(recipe.world_model, ctx) if recipe.world_model else None
    estimator = registry.estimator.build(recipe.estimator, ctx)
    scheduler = registry.scheduler.build(recipe.scheduler, ctx)
    return Components(env, world_model, estimator, scheduler)


def make_trainer(recipe: Recipe, out_dir: str | Path | None, device: str | torch.device,
                 registry: Registry, progress: bool = True) -> "Trainer":
    """Build the recipe's components and the :class:`~mbmix_fw.training.trainer.Trainer` that trains them.

    Plugins' event hooks (``on_iteration_end``, ``on_run_end``) receive the trainer's events.
    """
    from .memory import check_memory
    from ..training.trainer import Trainer  # the training loop is only needed once a run starts

    device = resolve_device(device)
    parts = build_components(recipe, registry, device)
    check_horizons(recipe, parts)
    check_first_plan(recipe, parts)
    check_budget(recipe, parts)
    check_metrics(recipe, parts)
    check_memory(recipe, parts.env, parts.estimator, parts.world_model, device,  # before anything is allocated
                 longest_window(parts))
    return Trainer(
        parts.env, parts.estimator, parts.scheduler, world_model=parts.world_model,
        run=recipe.run, policy=recipe.policy, critic=recipe.critic, optim=recipe.optim,
        out_dir=out_dir, device=device, hooks=registry.hooks, progress=progress,
    )


def longest_window(parts: Components) -> int:
    """The longest window a run can roll: the estimator's configured horizon or the scheduler's H_max."""
    declared = getattr(parts.scheduler, "horizon_range", None)
    configured = int(parts.estimator.horizon(parts.env))
    return max(configured, int(declared[1])) if declared is not None else configured


def check_horizons(recipe: Recipe, parts: Components) -> None:
    """One-line :class:`UserError` when the window lengths cannot work: the estimator's configured
    horizon outside its own ``horizon_bounds``, or what the scheduler declares it may plan
    (:func:`check_scheduler_declarations`) beyond what the estimator honours. Checked before anything is
    allocated; :func:`~mbmix_fw.building.memory.check_memory` then sizes the differentiable window by
    the longest horizon (:func:`longest_window`). The replay buffer needs no check: it is a FIFO that
    keeps the newest rows of a window larger than itself, by design (``recipes/cloth_mix_gpu.toml``)."""
    env, estimator = parts.env, parts.estimator
    low, high = estimator.horizon_bounds(env)
    configured = int(estimator.horizon(env))
    if not low <= configured <= high:
        raise UserError(f"estimator.horizon={configured} is outside [{low}, {high}], the window lengths estimator "
                        f"'{recipe.estimator.kind}' can roll on env '{recipe.env.kind}' "
                        f"(episode_length={env.episode_length})")
    check_scheduler_declarations(recipe, parts)


def check_scheduler_declarations(recipe: Recipe, parts: Components) -> None:
    """What the scheduler declares its plans may ask for, against what the estimator honours, so a recipe
    that cannot work is refused before anything is written rather than at the iteration that asks:
    ``horizon_range`` well formed, inside ``horizon_bounds`` and holding only multiples of
    ``horizon_multiple``; ``plans_lam`` only with an estimator that has a λ. A plan outside its own
    declarations is caught each iteration (:func:`~mbmix_fw.training.budget.check_plan`)."""
    env, estimator, scheduler = parts.env, parts.estimator, parts.scheduler
    who, what = component_label("scheduler", scheduler), component_label("estimator", estimator)
    where = f"on env '{recipe.env.kind}'"
    declared = getattr(scheduler, "horizon_range", None)
    if declared is not None:
        if (not isinstance(declared, (tuple, list)) or len(declared) != 2
                or not all(isinstance(h, int) and not isinstance(h, bool) for h in declared)
                or not 1 <= declared[0] <= declared[1]):
            raise UserError(f"{who}: horizon_range must be (H_min, H_max), integers with 1 <= H_min <= H_max, "
                            f"got {declared!r}")
        h_min, h_max = declared
        low, high = estimator.horizon_bounds(env)
        if not low <= h_min <= h_max <= high:
            raise UserError(f"{who} plans horizons [{h_min}, {h_max}] but {what} honours only [{low}, {high}] "
                            f"{where}; narrow the scheduler's horizon range")
        step = int(estimator.horizon_multiple(env))
        if step > 1 and (h_min < h_max or h_min % step):
            raise UserError(f"{who} plans any horizon in [{h_min}, {h_max}] but {what} rolls only multiples of "
                            f"{step}; use an estimator setting without that constraint (mix: interval = 1)")
    if getattr(scheduler, "plans_lam", False) and estimator.lam is None:
        raise UserError(f"{who} plans λ (plans_lam = True) but {what} mixes no windows (no λ); use an "
                        f"estimator with a λ (mix)")


def check_first_plan(recipe: Recipe, parts: Components) -> None:
    """A dry plan for iteration 0, on a copy of the scheduler, checked like every plan
    (:func:`~mbmix_fw.training.budget.check_plan`): what a scheduler plans without declaring it (a λ, a
    horizon) is refused before anything is written instead of at the first iteration, after the run
    folder exists. The copy shares the env, world model and estimator and leaves the scheduler's own
    state untouched, so its ``plan`` still runs exactly once per iteration of the run; a scheduler that
    cannot be copied skips this check (the per-iteration one still applies)."""
    from ..training import budget

    env, estimator = parts.env, parts.estimator
    shared = [c for c in (env, parts.world_model, estimator) if c is not None]
    try:
        scheduler = copy.deepcopy(parts.scheduler, {id(c): c for c in shared})
    except Exception:  # noqa: BLE001 - an uncopyable scheduler (a handle, a lock) only loses this early check
        return
    total = budget.planned_total(recipe.run, 0, 0, int(estimator.horizon(env)) * env.num_envs)
    plan = scheduler.plan(0, total, NO_METRICS)
    budget.check_plan(plan, parts.scheduler, estimator, env, 0)


def check_metrics(recipe: Recipe, parts: Components) -> None:
    """One-line :class:`UserError` when the scheduler reads a metric that no component of the run reports
    (:mod:`mbmix_fw.contracts.metrics`): its plans would read a default forever (a gate that never opens)."""
    from ..contracts.metrics import CONTACT_STIFFNESS, CONTACT_STIFFNESS_FIRST_STEP, HALF_COSINE, unproduced

    scheduler = parts.scheduler
    producers = [getattr(parts.estimator, "reports", frozenset())]
    if parts.world_model is not None:
        producers.append(getattr(parts.world_model, "reports", frozenset()))
    if getattr(scheduler, "needs_contact", False):
        producers.append({CONTACT_STIFFNESS, CONTACT_STIFFNESS_FIRST_STEP})
    if getattr(scheduler, "needs_gradient_agreement", False):
        producers.append({HALF_COSINE})
    missing = unproduced(getattr(scheduler, "reads", frozenset()), *producers)
    if missing:
        model = "no world model" if parts.world_model is None else f"world model {recipe.world_model.kind!r}"
        raise UserError(f"scheduler {recipe.scheduler.kind!r} reads {', '.join(missing)}, which no component of "
                        f"this run reports ({model}, estimator {recipe.estimator.kind!r}); use a world model "
                        f"that declares it in WorldModel.reports, or turn off the setting that reads it")


def check_budget(recipe: Recipe, parts: Components) -> None:
    """One-line :class:`UserError` when ``run.env_steps`` cannot be reached within ``run.iterations``
    iterations of at most the longest window (:func:`longest_window`) × ``num_envs`` env steps each:
    such a run would stop at its iteration cap, short of the budget it was asked to spend."""
    budget, cap = recipe.run.env_steps, recipe.run.iterations
    most = cap * longest_window(parts) * parts.env.num_envs
    if budget and budget > most:
        raise UserError(f"run.env_steps={budget} cannot be reached in run.iterations={cap} iterations of at most "
                        f"{longest_window(parts)} steps × {parts.env.num_envs} envs ({most} env steps); raise "
                        f"run.iterations (with a budget it is only a cap)")


def run_dir_for(recipe: Recipe, name: str, source: str | None = None) -> Path:
    """``recipe.run.out`` with ``{name}`` replaced (relative paths are relative to the working directory).

    A ``name`` of dots only (the stem of ``..toml`` is ``.``) is refused: ``runs/{name}`` would be
    ``runs/`` itself, or its parent, and the run would write among other runs. ``source`` names the recipe
    in that message."""
    if "{name}" in recipe.run.out and not name.strip("."):
        raise UserError(f"{source or name}: run.out = {recipe.run.out!r} names the run folder after the recipe's "
                        f"file name, which gives {name!r}, not a folder of its own; rename the recipe file or "
                        f"choose the folder with --out")
    return Path(recipe.run.out.replace("{name}", name))


def check_run_dir(out_dir: Path) -> None:
    """Fail with a one-line :class:`UserError` before anything is built if ``out_dir`` cannot become a
    new run folder: a file is there, or the folder (or its nearest existing parent) is not writable.

    Writability is tested by creating and removing a temporary folder, not with ``os.access`` (which
    says yes to root on a read-only file system), so nothing stays behind when the check fails."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder; choose another run folder with --out")
    shared = _shared_folder(out_dir)
    if shared:
        raise UserError(f"{out_dir}: is {shared}; a run writes checkpoints/, tb/, metrics.csv and recipe.json "
                        f"into its folder: give it one of its own, e.g. --out runs/NAME")
    parent = out_dir
    while not parent.exists():
        if parent.is_symlink():
            raise UserError(f"{out_dir}: {parent} is a broken symbolic link; choose another run folder")
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{out_dir}: cannot create the run folder: {parent} is not a folder")
    try:
        tempfile.TemporaryDirectory(prefix=".mbmix-write-test-", dir=parent).cleanup()
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot write the run folder in {parent}: {exc.strerror or exc}") from None


def _shared_folder(out_dir: Path) -> str:
    """What ``out_dir`` is if it is a folder a run must not spill its files into, else ``""``."""
    resolved, cwd = out_dir.resolve(), Path.cwd().resolve()
    if resolved == Path(resolved.anchor):
        return "the file-system root"
    if resolved == Path.home().resolve():
        return "your home folder"
    if resolved == cwd:
        return "the current directory"
    if resolved in cwd.parents:
        return "a parent of the current directory"
    return ""


def used_plugins(recipe: Recipe, registry: Registry) -> list[dict[str, Any]]:
    """Every loaded plugin (name, distribution, version, kinds) and which recipe tables it provides."""
    used: dict[str, list[str]] = {}
    for table in ("env", "world_model", "estimator", "scheduler"):
        config = getattr(recipe, table)
        if config is not None:
            entry = registry.slot(table).get(config.kind)
            used.setdefault(entry.plugin.name, []).append(table)
    return [
        {**info.to_json(), "kinds": registry.kinds_of(info.name), "provides": used.get(info.name, [])}
        for info in registry.plugins
    ]


def write_run_files(out_dir: str | Path, recipe: Recipe, registry: Registry) -> None:
    """Write ``recipe.json`` (the resolved recipe, defaults included) and ``plugins.json``."""
    out = Path(out_dir)
    write_json_atomic(out / RECIPE_JSON, recipe.model_dump(mode="json"))
    write_json_atomic(out / PLUGINS_JSON, used_plugins(recipe, registry))
