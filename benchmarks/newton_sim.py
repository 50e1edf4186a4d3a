"""Differentiable env-steps per second of the Newton ant against Brax's ant through our bridge (and pure JAX).

Measured in one run, per batch size ``N`` (default 32, 64, 256), horizon ``H = 16``, open-loop actions
``[H, N, A]`` (``0.5·randn``), the same for every variant:

- **newton**: ``mb.rollout`` through ``NewtonAnt`` (``plugins/mbmix_newton``: Featherstone, 16 substeps per step,
  ground contact, one ``mb.ExternalFunction`` crossing per step, recompute on a ``wp.Tape`` in backward), then
  ``rewards.sum().backward()``;
- **brax_bridged**: the same rollout through ``BraxEnv`` (``name = "ant"``, ``backend = "generalized"``: the fused
  JAX transition and its VJP through our bridge);
- **pure_jax** (unless ``--no-pure-jax``): ``jax.jit(jax.grad(loss))`` of a ``lax.scan`` of Brax's own vmapped
  ``step`` summing rewards, w.r.t. the actions (``benchmarks/brax_bridge.py``'s baseline).

Each variant runs once to compile, then the best of ``--repeats`` rounds, variants taking turns in each round
(a change of load on a shared machine hits all of them alike). Prints the rates (``H·N`` per forward+backward)
and ``newton / brax_bridged`` per ``N``, by wall time and by CPU time (``time.process_time``, all threads of
the process: what each variant itself spent, which a loaded shared machine does not distort). The two ants are not the same robot (Newton's ``nv_ant.xml`` at DiffRL's
density with 16 substeps per step; Brax's ant with its own ``n_frames``), so the ratio compares what one
differentiable env step of each costs, as the issue asks.

Run: ``python benchmarks/newton_sim.py [--num-envs 32 64 256] [--horizon 16] [--repeats 3]``.
"""
from __future__ import annotations

import argparse
import json
import time


def time_interleaved(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Best wall time and best CPU time (``time.process_time``: every thread of this process, so JAX's
    worker threads count) of each variant over ``repeats`` interleaved rounds. On a shared, loaded machine
    the wall time also measures the neighbours; the CPU time is what the variant itself spent."""
    for fn in fns.values():
        fn()  # compile / build
    best, best_cpu = dict.fromkeys(fns, float("inf")), dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
            best_cpu[name] = min(best_cpu[name], time.process_time() - started_cpu)
    return best, best_cpu


def open_loop(env, start, actions):
    import mbmix_fw as mb

    def run():
        steps = iter(range(actions.shape[0]))
        policy = lambda obs, g: actions[next(steps)]  # noqa: E731 - open loop
        out = mb.rollout(policy, env, env, mb.Cursor(start, None), actions.shape[0])
        actions.grad = None
        out.rewards.sum().backward()
        actions.grad.sum().item()
    return run


def measure(n: int, horizon: int, repeats: int, pure_jax: bool) -> dict:
    import torch

    import mbmix_fw as mb
    from mbmix_brax import BraxConfig
    from mbmix_brax.env import BraxEnv
    from mbmix_newton import NewtonAnt, NewtonAntConfig

    ctx = mb.BuildContext.cpu()
    newton_env = NewtonAnt(NewtonAntConfig(num_envs=n, episode_length=10**6), ctx)
    brax_env = BraxEnv(BraxConfig(name="ant", backend="generalized", num_envs=n, episode_length=10**6), ctx)
    gen = torch.Generator().manual_seed(0)
    actions = (0.5 * torch.randn(horizon, n, newton_env.action_dim, generator=gen)).requires_grad_(True)
    variants = {"newton": open_loop(newton_env, newton_env.reset(n, gen), actions),
                "brax_bridged": open_loop(brax_env, brax_env.reset(n, gen), actions)}
    if pure_jax:
        from mbmix_brax.bridge import jax, to_jax
        inner = brax_env.brax_env
        start = brax_env.reset(n, gen)
        state0 = jax.vmap(inner.reset)(jax.random.split(jax.random.PRNGKey(0), n))
        state0 = state0.replace(pipeline_state=jax.vmap(inner.pipeline_init)(
            to_jax(start[:, :brax_env.q_size].contiguous()), to_jax(start[:, brax_env.q_size:].contiguous())))
        step = jax.vmap(inner.step)

        def loss(acts, state):
            def body(s, a):
                s = step(s, a)
                return s, s.reward
            return jax.lax.scan(body, state, acts)[1].sum()

        grad = jax.jit(jax.grad(loss))
        jax_actions = to_jax(actions.detach())
        variants["pure_jax"] = lambda: grad(jax_actions, state0).block_until_ready()
    seconds, cpu_seconds = time_interleaved(variants, repeats)
    rates = {k: round(horizon * n / v, 1) for k, v in seconds.items()}
    cpu_rates = {k: round(horizon * n / v, 1) for k, v in cpu_seconds.items()}
    result = {"num_envs": n, "horizon": horizon, "diff_steps_per_s": rates,
              "newton_over_brax_bridged": round(rates["newton"] / rates["brax_bridged"], 3),
              "diff_steps_per_cpu_s": cpu_rates,
              "newton_over_brax_bridged_cpu": round(cpu_rates["newton"] / cpu_rates["brax_bridged"], 3)}
    if pure_jax:
        result["newton_over_pure_jax"] = round(rates["newton"] / rates["pure_jax"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[32, 64, 256])
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-pure-jax", action="store_true", help="skip the pure-JAX baseline (one compile less)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    for n in args.num_envs:
        result = measure(n, args.horizon, args.repeats, not args.no_pure_jax)
        print(json.dumps(result), flush=True)
        print(f"N={n}: newton / brax (bridged) diff-steps/s = {result['newton_over_brax_bridged']:.3f} (wall), "
              f"{result['newton_over_brax_bridged_cpu']:.3f} (per CPU second)", flush=True)


if __name__ == "__main__":
    main()
