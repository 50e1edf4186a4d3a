"""Does Sobolev training learn better Jacobians than plain MSE, at the same budget? (method.md §1.3(d))

Data: ``--transitions`` pendulum transitions (default: two regimes, 300 — sparse, as early in a run or
in any high-dimensional env — and 2000, which covers this 3-D input space densely) (plugin ``mbmix_toy``, gym dynamics with
the smooth speed limit) from states uniform over θ ∈ [-π, π], θ̇ ∈ [-8, 8] and actions uniform in [-1, 1], each with 4
Jacobian probes from the simulator's adjoint. Held out: 4000 fresh transitions with *full* Jacobians.

Models: the default ``sobolev_mlp`` config (hidden [256, 256], batch 256, α_s = α_a = 1, probe mixing)
and the same config with α_s = α_a = 0 (plain MSE). Same seed (identical initial weights), same
minibatch sequence from the same transitions (the MSE model just ignores the probes), same number of
``fit`` steps — hence identical normalisation statistics, which the script checks. For information, a
third row trains the Sobolev model with ``jacobian_fraction = 0.25`` (the cheaper update, see
``sobolev_cost.py``).

Metrics (``SobolevMLP.evaluate``): Jacobian error = pooled relative Frobenius error of
``[∂s'/∂s, ∂s'/∂a]`` (exact, full Jacobians); state error = mean squared next-state error in units of
the training data's one-step change σ_Δ. Goal: Jacobian error ≥ 2× lower with state error ≤ 1.1× higher.

Run: ``python benchmarks/sobolev_accuracy.py [--steps 2000] [--transitions 300 2000]`` (about 2 min on
2 CPU cores).
"""
from __future__ import annotations

import argparse
import time

import torch

import mbmix_fw as mb
from mbmix_world_models import SobolevConfig, make_sobolev
from mbmix_toy import Pendulum, PendulumConfig

PROBES = 4


def uniform_transitions(env: Pendulum, n: int, generator: torch.Generator, full: bool) -> mb.TransitionBatch:
    state = (torch.rand(n, 2, generator=generator) * 2 - 1) * torch.tensor([torch.pi, env.config.max_speed])
    action = torch.rand(n, 1, generator=generator) * 2 - 1
    if full:
        return mb.collect_jacobians(env, state, action)
    return mb.collect_transitions(env, state, action, PROBES, generator)


def rows(batch: mb.TransitionBatch, index: torch.Tensor, probes: bool) -> mb.TransitionBatch:
    fields = (batch.state, batch.action, batch.next_state)
    if probes:
        fields += (batch.probe_u, batch.probe_s, batch.probe_a)
    return mb.TransitionBatch(*(v[index] for v in fields))


def train(config: SobolevConfig, env: Pendulum, data: mb.TransitionBatch, steps: int):
    model = make_sobolev(config, mb.BuildContext.cpu(seed=0).with_env(env))
    order = torch.Generator().manual_seed(1)  # the same minibatches for every model
    started = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(len(data), (model.batch_size,), generator=order)
        model.fit(rows(data, index, probes=model.probes > 0))
    return model, time.perf_counter() - started


def compare(env: Pendulum, transitions: int, steps: int) -> None:
    data_gen = torch.Generator().manual_seed(0)
    data = uniform_transitions(env, transitions, data_gen, full=False)
    held_out = uniform_transitions(env, 4000, data_gen, full=True)
    runs = {
        "mse": SobolevConfig(alpha_s=0.0, alpha_a=0.0),
        "sobolev": SobolevConfig(probes=PROBES),
        "sobolev_f0.25": SobolevConfig(probes=PROBES, jacobian_fraction=0.25),
    }
    print(f"{transitions} training transitions, {steps} fit steps of batch 256:")
    results, models = {}, {}
    for name, config in runs.items():
        models[name], seconds = train(config, env, data, steps)
        results[name] = r = models[name].evaluate(held_out)
        print(f"  {name:14s} jacobian error {r['model/jacobian_error']:.4f} (s {r['model/jacobian_error_s']:.4f}, "
              f"a {r['model/jacobian_error_a']:.4f}) | state error {r['model/state_error']:.2e} | train {seconds:.0f} s")
    for name in ("sobolev", "sobolev_f0.25"):
        # same data order => same statistics => the state errors are in the same units
        assert torch.equal(models[name].delta_stats.var, models["mse"].delta_stats.var)
        jac = results["mse"]["model/jacobian_error"] / results[name]["model/jacobian_error"]
        state = results[name]["model/state_error"] / results["mse"]["model/state_error"]
        met = jac >= 2.0 and state <= 1.1
        print(f"  {name}: Jacobian error {jac:.2f}x lower than MSE's (goal >= 2), state error {state:.2f}x "
              f"MSE's (goal <= 1.1): {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="fit steps for every model")
    parser.add_argument("--transitions", type=int, nargs="+", default=[300, 2000], help="training set sizes")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = Pendulum(PendulumConfig())
    print("sobolev_accuracy: pendulum, uniform states and actions, held-out 4000 transitions with full "
          f"Jacobians, default sobolev_mlp config, threads={args.threads}")
    for transitions in args.transitions:
        compare(env, transitions, args.steps)


if __name__ == "__main__":
    main()
