"""One rank of tests/core/distributed/test_ddp.py's gradient check: ``python ddp_gradient_worker.py RANK WORLD INIT_FILE OUT``.

Builds the MB-MIX pendulum trainer exactly as ``torchrun -m mbmix_fw run`` does (the rank's env slice and
seed, then :func:`make_data_parallel`), evaluates the estimator's actor loss on this rank's slice of
fixed start states with a deterministic policy (so the union of the slices is exactly the single-process
batch), takes the trainer's guarded steps, and saves what the test compares. With ``WORLD == 1`` it is the
single-process reference over all envs.
"""
from __future__ import annotations

import datetime
import sys

import torch
import torch.distributed as dist

import mbmix_fw as mb
from mbmix_fw.building.build import make_trainer
from mbmix_fw.distributed.ddp import make_data_parallel, rank_seed, split_recipe_data

NUM_ENVS = 8
RECIPE = {
    "run": {"seed": 0, "iterations": 1, "device": "cpu"},
    "env": {"kind": "pendulum", "num_envs": NUM_ENVS},
    "world_model": {"kind": "sobolev_mlp", "hidden": [16], "probes": 2, "batch_size": 16},
    "estimator": {"kind": "mix", "lam": 0.9, "horizon": 8, "gamma": 0.99},
    "scheduler": {"kind": "dyna", "model_branches": 4, "model_fit_steps": 1},
    "policy": {"hidden": [16, 16]},
    "critic": {"hidden": [16, 16]},
}


def grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    """Gradients after the guarded step (the deterministic policy's log-std has none: ``None``)."""
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


def main(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    registry = mb.load_registry()
    recipe = mb.validate_recipe(split_recipe_data(RECIPE, rank, world, "test"), registry)
    assert recipe.run.seed == rank_seed(0, rank) and recipe.env.num_envs == NUM_ENVS // world
    trainer = make_trainer(recipe, None, "cpu", registry, progress=False)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=240))  # a rank left waiting fails (load-proof)
        trainer._plan = lambda iteration, total, metrics: mb.Plan(horizon=2 + rank)  # rank-dependent
        make_data_parallel(trainer, world)
    shared = torch.Generator().manual_seed(123)  # the same draws on every rank: each takes its slice
    starts = trainer.env.reset(NUM_ENVS, shared)
    lo, hi = rank * NUM_ENVS // world, (rank + 1) * NUM_ENVS // world

    def actor_loss() -> mb.Estimate:
        start = mb.Cursor(starts[lo:hi], torch.zeros(hi - lo, dtype=torch.long))
        return trainer.estimator.estimate(mb.EstimatorInput(
            policy_fn=lambda obs, g: trainer.policy(trainer.networks.normalize(obs), deterministic=True),
            value_fn=lambda obs: trainer.target_critic(trainer.networks.normalize(obs)),
            env=trainer.env, dynamics=trainer.env, start=start, generator=trainer.generator))

    result: dict[str, object] = {"planned_horizon": trainer._plan(0, 1, {}).horizon if world > 1 else 2}
    at_step_grads: dict[str, list] = {}  # the guarded step clears gradients after stepping: catch them at it
    trainer.actor_opt.register_step_pre_hook(lambda *_: at_step_grads.update(actor=grads(trainer.policy)))
    trainer.critic_opt.register_step_pre_hook(lambda *_: at_step_grads.update(critic=grads(trainer.critic)))
    estimate = actor_loss()
    norm = trainer.guard.step(estimate.loss, trainer.policy, trainer.actor_opt, "actor")
    result["actor_norm"] = float(norm)
    result["actor_grads"] = at_step_grads["actor"]

    obs = estimate.rollout.obs.detach()
    targets = estimate.rollout.rewards.detach()
    critic_loss = (trainer.critic(trainer.networks.normalize(obs)) - targets).pow(2).mean()
    norm = trainer.guard.step(critic_loss, trainer.critic, trainer.critic_opt, "critic")
    result["critic_norm"] = float(norm)
    result["critic_grads"] = at_step_grads["critic"]

    trainer.obs_norm.update(obs)
    result["obs_stats"] = [trainer.obs_norm.mean.clone(), trainer.obs_norm.var.clone(), trainer.obs_norm.count]

    # a non-finite loss on the last rank only: every rank must skip that update
    poisoned = actor_loss().loss * (float("nan") if rank == world - 1 else 1.0)
    trainer.guard.step(poisoned, trainer.policy, trainer.actor_opt, "actor")
    result["skipped"] = int(trainer.guard.skips["actor"][0])  # skips are counted on the device

    # world model: the gradients at its optimiser's step are the mean of the ranks' own gradients
    model = trainer.world_model
    local, at_step = {}, {}
    for i, p in enumerate(model.parameters()):
        p.register_post_accumulate_grad_hook(lambda p, i=i: local.__setitem__(i, p.grad.clone()))
    model.optimizer.register_step_pre_hook(  # per-optimiser hooks run after the global (averaging) one
        lambda opt, args, kwargs: at_step.update({i: p.grad.clone() for i, p in enumerate(model.parameters())}))
    states = trainer.env.reset(32, shared)
    actions = torch.rand(32, trainer.env.action_dim, generator=shared) * 2 - 1
    span = slice(rank * 32 // world, (rank + 1) * 32 // world)
    model.fit(mb.collect_transitions(trainer.env, states[span], actions[span], model.probes, shared))
    result["model_local"] = [local[i] for i in sorted(local)]
    result["model_at_step"] = [at_step[i] for i in sorted(at_step)]
    result["model_state"] = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    torch.save(result, out)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
