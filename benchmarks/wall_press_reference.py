"""Reference scores of the wall's contact task (``press_force``, plugins/mbmix_toy/wall.py) without learning:
no push, a constant push at the target (a = F*/max_force: what the steady state needs), a full push, and the
best PD controller ``a = clip(b − k_p·x − k_d·v)`` on a small grid — per stiffness, the mean undiscounted
return over 256 starts (seed 0) of 64-step episodes, the study's settings (``stiffness_study.TASKS["press"]``).
What they show: the knob bites on this task (the same constant push loses 7× more at k = 1e5 than at 1e2, from
the rattle) and how far the learned policies are from a simple controller.

    python benchmarks/wall_press_reference.py
"""
from __future__ import annotations

import itertools

import torch

from mbmix_toy import WallPush, WallPushConfig

STARTS, STEPS = 256, 64
GRID = {"k_p": (0, 1, 3, 10, 30), "k_d": (0, 0.3, 1, 3, 10), "b": (0.3, 0.5, 0.7, 1.0)}


def score(env: WallPush, policy) -> float:
    state = env.reset(STARTS, torch.Generator().manual_seed(0))
    total = torch.zeros(STARTS, dtype=state.dtype)
    for _ in range(STEPS):
        action = policy(state).clamp(-1, 1).unsqueeze(-1)
        next_state = env.step(state, action)
        total += env.reward(state, action, next_state)
        state = next_state
    return float(total.mean())


def main() -> None:
    torch.set_num_threads(1)
    for stiffness in (1e2, 1e4, 1e5):
        env = WallPush(WallPushConfig(stiffness=stiffness, press_force=2.5, init_distance=(0.1, 0.5)))
        constant = lambda a: (lambda s: torch.full_like(s[:, 0], a))  # noqa: E731
        best = max((score(env, lambda s, kp=kp, kd=kd, b=b: b - kp * s[:, 0] - kd * s[:, 1]), kp, kd, b)
                   for kp, kd, b in itertools.product(*GRID.values()))
        print(f"k={stiffness:g}: no push {score(env, constant(0.0)):.2f}, constant a=0.5 "
              f"{score(env, constant(0.5)):.2f}, full push {score(env, constant(1.0)):.2f}, best PD "
              f"{best[0]:.2f} (k_p={best[1]}, k_d={best[2]}, b={best[3]})")


if __name__ == "__main__":
    main()
