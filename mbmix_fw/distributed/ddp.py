"""Data-parallel training: ``torchrun --nproc_per_node=K -m mbmix_fw run RECIPE`` (and ``resume RUN_DIR``).

Every rank builds an ordinary trainer from the recipe, then :func:`make_data_parallel` joins them:

- **Env batch split.** ``env.num_envs`` is the *total* batch: rank ``r`` simulates ``num_envs / K`` envs
  (an error, exit 2, unless K divides it), so K ranks train on the same batch as one process, and a
  recipe's hyper-parameters keep their meaning. Model branches (``scheduler.model_branches``) are per
  rank. Rank ``r`` seeds its envs and action noise with ``run.seed + 100_003·r``.
- **Same weights everywhere.** Rank 0's parameters and buffers (policy, critic, target critic, observation
  normaliser, world model) are broadcast once at the start.
- **Averaged gradients.** ``Trainer.grad_sync`` (the trainer's one hook, called after ``backward`` and
  before clipping and the finite check) all-reduces the policy and critic gradients and divides by K. All
  estimators' losses are means over envs, so with equal slices the average *is* the gradient over the
  union of the ranks' envs. A rank whose loss is non-finite still takes part in the all-reduce, and every
  skip decision (a non-finite loss or gradient, an empty critic minibatch, an actor backward with no finite
  action row, a world-model fit on a non-finite batch) is OR-ed over the ranks by one all-reduce of the flag
  (:func:`mbmix_fw.any_rank`): all replicas skip or step together, never drift apart, and no rank is left
  waiting in a collective another rank skipped.
- **World model.** Its own optimiser steps inside the plugin's ``fit``; an optimiser step pre-hook
  averages the gradients of any optimiser over the world model's parameters, and the world model's
  floating-point buffers (normalisation statistics), before each step. (Averaged statistics: the mean is
  that of the union, the variance misses the spread between ranks' means.)
- **Observation normaliser** updates from the observations of all ranks (an all-gather), exactly as one
  process would from the union.
- **Rank 0 plans.** Every rank's scheduler is asked (``plan`` runs once per iteration everywhere, so a
  stateful scheduler's state stays the same kind of object on every rank), and every rank follows rank 0's
  :class:`~mbmix_fw.Plan`, broadcast each iteration: an adaptive scheduler reads metrics that differ
  between ranks (each rank's own envs), and the replicas must roll the same window length.
- **Rank 0 writes**: ``recipe.json`` (the recipe as given, total ``num_envs``), ``data_parallel.json``
  (``{"world_size": K}``), ``metrics.csv`` (rank 0's training metrics; its evaluation is the
  single-process one of the same seed), TensorBoard and checkpoints. Other ranks write nothing.
- **Resume** with the same command and the same K (``torchrun ... -m mbmix_fw resume RUN_DIR``): every
  rank loads rank 0's checkpoint (weights, optimisers, buffer, log), then ranks ``r > 0`` start fresh
  episodes from ``run.seed + 100_003·r + iteration``. Rank 0 continues exactly; others are re-seeded.

Backend: NCCL when training on CUDA (rank ``r`` uses ``cuda:LOCAL_RANK``), gloo on CPU.
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from ..contracts.component import EnvConfig
from ..errors import UserError

if TYPE_CHECKING:
    import torch

    from ..building.recipe import Recipe
    from ..building.registry import Registry
    from ..building.runs import Run
    from ..training.trainer import Trainer

SEED_STRIDE = 100_003


def launched_by_torchrun() -> bool:
    """True in a process that torchrun started as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def process_rank() -> int:
    """This process's rank under torchrun (0 outside it)."""
    return int(os.environ.get("RANK", "0"))


def rank_seed(seed: int, rank: int) -> int:
    return seed + SEED_STRIDE * rank


def split_recipe_data(data: dict[str, Any], rank: int, world_size: int, source: str) -> dict[str, Any]:
    """Rank ``rank``'s recipe: its slice of ``env.num_envs`` and of ``run.env_steps``, and its seed (the rest
    unchanged)."""
    import copy

    data = copy.deepcopy(data)
    env = data.setdefault("env", {})
    total = env.get("num_envs", EnvConfig.model_fields["num_envs"].default)  # every EnvConfig has num_envs
    if total % world_size:
        raise UserError(f"{source}: env.num_envs: {total} envs cannot be split evenly over {world_size} "
                        f"ranks; use a multiple of {world_size}")
    env["num_envs"] = total // world_size
    run = data.setdefault("run", {})
    run["seed"] = rank_seed(run.get("seed", 0), rank)
    budget = run.get("env_steps", 0)
    if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0:
        if budget % world_size:
            raise UserError(f"{source}: run.env_steps: a budget of {budget} env steps cannot be split evenly over "
                            f"{world_size} ranks; use a multiple of {world_size}")
        run["env_steps"] = budget // world_size  # each rank counts its own envs' steps
    return data


# ---- the gradient-averaging hook and its companions
def average_gradients(params: Iterable["torch.Tensor"], world_size: int) -> None:
    """All-reduce ``params``' gradients in one flat buffer and divide by ``world_size``.

    A parameter keeps ``grad = None`` when no rank produced one. A rank whose gradients are all ``None``
    (it skipped its backward on a non-finite loss) marks the call: every rank then gets NaN gradients and
    the trainer's finite check skips the update everywhere.
    """
    import torch
    import torch.distributed as dist

    params = [p for p in params if p.requires_grad]
    if not params:
        return
    anchor = params[0]
    present = torch.tensor([p.grad is not None for p in params], dtype=anchor.dtype, device=anchor.device)
    skipped = torch.tensor([0.0 if bool(present.any()) else 1.0], dtype=anchor.dtype, device=anchor.device)
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    flat = torch.cat([*grads, present, skipped])
    dist.all_reduce(flat)
    sizes = [p.numel() for p in params]
    flat[:sum(sizes)] /= world_size
    chunks = flat[:sum(sizes)].split(sizes)
    any_skipped = bool(flat[-1] > 0)
    for p, chunk, count in zip(params, chunks, flat[sum(sizes):-1]):
        if any_skipped:
            p.grad = torch.full_like(p, math.nan)
        elif count > 0:
            p.grad = chunk.view_as(p).clone()
        else:
            p.grad = None


def average_buffers(module: "torch.nn.Module", world_size: int) -> None:
    import torch
    import torch.distributed as dist

    for buffer in module.buffers():
        if torch.is_floating_point(buffer):
            dist.all_reduce(buffer)
            buffer /= world_size


def broadcast_state(modules: Sequence["torch.nn.Module | None"]) -> None:
    """Copy rank 0's parameters and buffers into every rank's modules."""
    import torch.distributed as dist

    for module in modules:
        if module is None:
            continue
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def _gathering_update(update, world_size: int):
    """Wrap ``ObsNormalizer.update`` so it sees every rank's observations (the union, as one process)."""
    import torch
    import torch.distributed as dist

    def update_with_all_ranks(obs: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        # obs [T, N/K, D] (or [N/K, D]) and mask [T, N/K] (or [N/K]): the envs axis is the one to join
        axis = obs.dim() - 2
        parts = [torch.empty_like(obs) for _ in range(world_size)]
        dist.all_gather(parts, obs.contiguous())
        joined = torch.cat(parts, dim=axis)
        if mask is not None:
            masks = [torch.empty_like(mask) for _ in range(world_size)]
            dist.all_gather(masks, mask.contiguous())
            mask = torch.cat(masks, dim=axis)
        update(joined, mask)

    return update_with_all_ranks


def make_data_parallel(trainer: "Trainer", world_size: int) -> list[Any]:
    """Join this rank's ``trainer`` to the process group; returns hook handles (``.remove()`` to undo)."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    broadcast_state([trainer.policy, trainer.critic, trainer.target_critic, trainer.obs_norm,
                     trainer.world_model])
    trainer.grad_sync = lambda module: average_gradients(module.parameters(), world_size)
    trainer.ranks = world_size  # env/steps and the evaluation cadence count every rank's steps
    trainer._plan = _rank0_plan(trainer._plan)
    if trainer.obs_norm is not None:
        trainer.obs_norm.update = _gathering_update(trainer.obs_norm.update, world_size)
    handles = []
    if trainer.world_model is not None:
        model = trainer.world_model
        own = {id(p) for p in model.parameters()}
        trainer_opts = {id(trainer.actor_opt), id(trainer.critic_opt)}

        def before_model_step(optimizer, args, kwargs):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if id(optimizer) in trainer_opts or not params or any(id(p) not in own for p in params):
                return
            average_gradients(params, world_size)
            average_buffers(model, world_size)

        handles.append(register_optimizer_step_pre_hook(before_model_step))
    return handles


def _rank0_plan(plan_of):
    """``plan_of`` whose result is replaced by rank 0's (one small object broadcast per iteration)."""
    import torch.distributed as dist

    def planned(iteration, total, metrics):
        chosen = [plan_of(iteration, total, metrics)]
        dist.broadcast_object_list(chosen, src=0)
        return chosen[0]

    return planned


# ---- a run or a resume, as one of torchrun's ranks
def run_data_parallel(recipe_path: str | Path, registry: "Registry", *, sets: Iterable[Any] = (),
                      device: str | None = None, out: str | Path | None = None,
                      progress: bool = True) -> tuple[dict[str, float], "Run"]:
    """This rank's part of ``torchrun ... mbmix-fw run RECIPE``: the same recipe, overrides and folder checks
    as a one-process run (:func:`~mbmix_fw.building.runs.plan_run`), trained on this rank's slice; rank 0
    writes the run folder and ``data_parallel.json``. Returns the final metrics and the run."""
    from ..building.runs import plan_run, start_run

    recipe, out_dir = plan_run(recipe_path, registry, sets, device=device, out=out)
    rank, world_size = _world()
    rank_recipe = _rank_recipe(recipe.model_dump(mode="json"), registry, str(recipe_path))
    with _process_group(recipe.run.device) as device:
        run = start_run(recipe, out_dir if rank == 0 else None, registry, device=device,
                        progress=progress and rank == 0, trainer_recipe=rank_recipe, world_size=world_size)
        return _train(run), run


def resume_data_parallel(run_dir: str | Path, registry: "Registry", *, device: str | None = None,
                         progress: bool = True) -> tuple[dict[str, float] | None, "Run"]:
    """This rank's part of ``torchrun ... mbmix-fw resume RUN_DIR``, with the rank count it was trained
    with. Every rank restores rank 0's checkpoint (weights, optimisers, buffer, log); ranks ``r > 0`` then
    start fresh episodes from ``run.seed + 100_003·r + iteration``. Returns ``(None, run)`` for a run that
    was already finished."""
    import torch

    from ..building.runs import open_saved_run, resume_run
    from ..maths.rollouts import Cursor

    rank, world_size = _world()
    saved = open_saved_run(run_dir, registry, world_size=world_size)
    rank_recipe = _rank_recipe(saved.recipe.model_dump(mode="json"), registry, saved.source)
    with _process_group(device if device is not None else saved.recipe.run.device) as device:
        run = resume_run(saved, registry, device=device, progress=progress and rank == 0,
                         trainer_recipe=rank_recipe, write=rank == 0)
        if run.finished:
            return None, run
        trainer = run.trainer
        if rank > 0 and not run.started_afresh:  # rank 0's checkpoint holds rank 0's episodes: start afresh
            trainer.generator.manual_seed(rank_seed(saved.recipe.run.seed, rank) + trainer.iteration)
            trainer.cursor = Cursor(trainer.env.reset(trainer.env.num_envs, trainer.generator),
                                    torch.zeros(trainer.env.num_envs, dtype=torch.long, device=device))
            trainer.episodes.running.zero_()
        return _train(run), run


def _world() -> tuple[int, int]:
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def _rank_recipe(data: dict[str, Any], registry: "Registry", source: str) -> "Recipe":
    from ..building.recipe import validate_recipe

    rank, world_size = _world()
    return validate_recipe(split_recipe_data(data, rank, world_size, source), registry, source)


@contextlib.contextmanager
def _process_group(device_name: str) -> Iterator["torch.device"]:
    """Join torchrun's process group (NCCL on CUDA, rank ``r`` on ``cuda:LOCAL_RANK``; gloo on CPU) for
    the ``with`` block; yields this rank's device."""
    import torch
    import torch.distributed as dist

    from ..building.build import resolve_device

    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def _train(run: "Run") -> dict[str, float]:
    handles = make_data_parallel(run.trainer, _world()[1])
    try:
        return run.train()
    finally:
        for handle in handles:
            handle.remove()
