"""One rank of tests/core/distributed/test_ddp.py's union checks: ``python ddp_union_worker.py RANK WORLD INIT_FILE OUT``.

Rank 0's window is healthy in every env, rank 1's in none. The actor loss each rank computes
(``masked_actor_loss``), differentiated and averaged over the ranks as data-parallel training does, must be
the gradient of the mean over every healthy env of both ranks. And the world model's rollback decides on the
mean held-out error of the ranks, so both ranks take the same decision from different local errors.
"""
from __future__ import annotations

import datetime
import sys

import torch
import torch.distributed as dist

import mbmix_fw as mb
from mbmix_fw.testing import LinearEnv
from mbmix_fw.training.cost import SimulatorCost
from mbmix_fw.training.guard import DivergenceGuard
from mbmix_fw.training.world_model_learner import WorldModelLearner
from mbmix_world_models import SobolevConfig, make_sobolev

T, N = 4, 3


def main(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=240))
    env = LinearEnv(num_envs=N, episode_length=16)
    window = mb.rollout(lambda obs, g: torch.zeros(obs.shape[0], env.action_dim), env, env,
                        mb.Cursor(env.reset(N, torch.Generator().manual_seed(rank)), None), T)
    if rank == 1:  # every env of this rank's window diverged
        window = mb.Rollout(**{**{k: getattr(window, k) for k in mb.Rollout.__annotations__ if k != "rewards"},
                               "rewards": window.rewards * float("nan")})
    w = torch.ones(N, requires_grad=True)
    x = torch.arange(1.0, N + 1) * (rank + 1)
    loss = mb.masked_actor_loss(w * x, window, env)
    (grad,) = torch.autograd.grad(loss, w)
    dist.all_reduce(grad)
    grad /= world

    model = make_sobolev(SobolevConfig(hidden=[8], probes=1, batch_size=4), mb.BuildContext.cpu().with_env(env))
    learner = WorldModelLearner(model, env, DivergenceGuard(torch.device("cpu"), 1.0, 5), SimulatorCost(), 0,
                                torch.device("cpu"), torch.float32)
    agreed = learner._agreed_state_error(1.0 if rank == 0 else 3.0)
    none_here = learner._agreed_state_error(2.0 if rank == 0 else None)
    torch.save({"grad": grad, "loss": float(loss), "agreed": agreed, "none_here": none_here}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
