"""One rank of tests/core/distributed/test_ddp.py's skip-agreement check: ``python ddp_skip_worker.py RANK WORLD INIT_FILE OUT``.

Rank 1 alone goes non-finite in every way a rank can: a NaN loss with a finite gradient, an empty critic
minibatch, an actor backward whose every action row is NaN, a non-finite world-model batch, and a whole
training iteration whose simulator slice is NaN (so its buffer stays empty while rank 0's fills). Each rank
saves its counts and its full state; the test checks that both skipped the same updates, that the replicas
are equal, and (by the 240 s gloo timeout) that no rank was left waiting in a collective.
"""
from __future__ import annotations

import datetime
import sys

import torch
import torch.distributed as dist

import mbmix_fw as mb
from mbmix_fw.building.build import make_trainer
from mbmix_fw.distributed.ddp import make_data_parallel, split_recipe_data

class NaNGradient(torch.autograd.Function):
    """Identity forward, NaN backward (a simulator whose adjoint blew up)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


RECIPE = {
    "run": {"seed": 0, "iterations": 3, "device": "cpu", "eval_envs": 2},
    "env": {"kind": "pendulum", "num_envs": 8, "episode_length": 16},
    "world_model": {"kind": "sobolev_mlp", "hidden": [16], "probes": 2, "batch_size": 16},
    "estimator": {"kind": "mix", "lam": 0.9, "horizon": 4},
    "scheduler": {"kind": "dyna", "model_branches": 4, "model_fit_steps": 1, "warmup_iterations": 1},
    "policy": {"hidden": [16]},
    "critic": {"hidden": [16], "iterations": 2, "minibatches": 2},
}


def main(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    registry = mb.load_registry()
    recipe = mb.validate_recipe(split_recipe_data(RECIPE, rank, world, "test"), registry)
    trainer = make_trainer(recipe, None, "cpu", registry, progress=False)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=240))  # a rank left waiting fails (load-proof)
    make_data_parallel(trainer, world)
    bad = rank == 1
    nan = float("nan") if bad else 0.0
    obs = torch.linspace(-1, 1, 4 * trainer.env.obs_dim).reshape(4, -1)
    trainer.guard.begin_iteration()

    # a NaN loss whose gradient is finite (the all-reduced gradient is finite on both ranks)
    critic_loss = trainer.critic(obs).pow(2).mean()
    trainer.guard.step(critic_loss + nan, trainer.critic, trainer.critic_opt, "critic")
    # an empty critic minibatch on rank 1 only
    trainer.guard.step(trainer.critic(obs).pow(2).mean(), trainer.critic, trainer.critic_opt, "critic",
                          empty=torch.tensor(bad))
    # an actor backward whose every action row is NaN on rank 1 only (rank 0's rows are all finite): the
    # union kept rows, so neither rank skips; rank 1's zeroed rows add nothing to the averaged gradient
    action = trainer.actor_update.policy_fn(obs, torch.Generator().manual_seed(0))
    action = NaNGradient.apply(action) if bad else action
    trainer.guard.step((action - 0.3).pow(2).sum(), trainer.policy, trainer.actor_opt, "actor")
    flags = {name: int(skipped) for name, (skipped, _) in trainer.guard.skips.items()}

    # a world-model batch that is non-finite on rank 1 only, then a clean one
    shared = torch.Generator().manual_seed(5)
    states = trainer.env.reset(16, shared)
    actions = torch.rand(16, trainer.env.action_dim, generator=shared) * 2 - 1
    batch = mb.collect_transitions(trainer.env, states, actions, trainer.world_model.probes, shared)
    broken = mb.TransitionBatch(batch.state * (1 + nan), batch.action, batch.next_state, batch.probe_u,
                                batch.probe_s, batch.probe_a)
    model_skips = [trainer.world_model.fit(broken).get("model/skipped", 0.0),
                   trainer.world_model.fit(batch).get("model/skipped", 0.0)]

    # training: rank 1's whole simulator slice is NaN in the first iteration (its buffer stays empty). The
    # env's ``score`` is poisoned: a run with a world model steps its real window through ``step`` then
    # ``score`` (the adjoint tap), so ``transition`` is not called.
    score = trainer.env.score
    calls = [0]

    def score_on_this_rank(state, action, next_state):
        calls[0] += 1
        step = score(state, action, next_state)
        if bad and calls[0] <= RECIPE["estimator"]["horizon"]:
            poison = float("nan")
            return mb.Transition(step.next_state * poison, step.reward * poison, step.terminated,
                                 step.next_obs * poison)
        return step

    trainer.env.score = score_on_this_rank
    trainer.train()
    state = {f"{name}.{key}": value.clone() for name, module in (
        ("policy", trainer.policy), ("critic", trainer.critic), ("target", trainer.target_critic),
        ("model", trainer.world_model), ("obs_norm", trainer.obs_norm))
        for key, value in module.state_dict().items() if torch.is_tensor(value)}
    torch.save({"flags": flags, "model_skips": model_skips, "state": state,
                "history": trainer.log.history, "buffer": len(trainer.buffer)}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
