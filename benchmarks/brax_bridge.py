"""How fast is a differentiable window through Brax from torch, against the same window in pure JAX?

Measured in one run, same env, backend, batch ``N`` and horizon ``H``, open-loop actions ``[H, N, A]``:

- **pure JAX**: ``jax.jit(jax.grad(loss))`` where ``loss`` is a ``lax.scan`` of ``vmap(env.step)`` (Brax's
  own state carried between steps) summing the rewards; differentiated w.r.t. the actions;
- **bridged, fused**: the trainer's rollout code (``mb.rollout``) through ``BraxEnv``, one bridge crossing
  per step for the transition (the next step's observation is the transition's), then ``loss.backward()``;
  the bridge's backward recomputes the step fused with its VJP (``bridge_backward = "recompute"``, default);
- **bridged, residuals**: the same with ``bridge_backward = "residuals"`` (the forward returns JAX's
  residuals, the backward only applies the pullback);
- **bridged, rebuilt** (when the checkout has ``carry_pipeline``): the fused bridge with
  ``carry_pipeline = false``, rebuilding Brax's pipeline state from ``(q, qd)`` every step;
- **bridged, unfused**: the same with ``DiffEnv``'s default ``transition`` (``step`` then ``score``: two
  crossings per step), to show what fusing buys.

``--closed-loop`` replaces the open-loop actions by a policy, ``tanh(obs @ W)``, in both (the gradient is taken
with respect to ``W``): every step's observation then feeds the next action, as in training. Open loop, no
observation is used, so the bridge's unused outputs and pure JAX's pruning make a different comparison.

Prints differentiable env-steps per second (``H·N`` per forward+backward) for each and the ratio
bridged/pure-JAX last. ``--cache`` also times the first use of the env (build, trace, compile) in two fresh
processes sharing an empty compilation cache: the second one should load instead of compiling.

Run: ``python benchmarks/brax_bridge.py --env ant --num-envs 64 --horizon 16 [--cache]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

FIRST_USE = r"""
import json, sys, time
started = time.perf_counter()
import torch
from mbmix_brax import BraxConfig
from mbmix_brax.env import BraxEnv
env = BraxEnv(BraxConfig(name=sys.argv[1], backend=sys.argv[2], num_envs=int(sys.argv[3])))
built = time.perf_counter()
x = env.reset(env.num_envs, torch.Generator().manual_seed(0)).requires_grad_(True)
a = torch.zeros(env.num_envs, env.action_dim, requires_grad=True)
out = env.transition(x, a)
(out.reward.sum() + out.next_state.sum()).backward()
done = time.perf_counter()
print(json.dumps({"build_s": built - started, "first_step_s": done - built, "total_s": done - started}))
"""


def time_interleaved(fns: dict, repeats: int) -> dict:
    """Best of ``repeats`` for each function, the functions taking turns in each round, so that a change
    of machine load (a shared CPU) hits all of them alike instead of skewing their ratio."""
    for fn in fns.values():
        fn()  # compile
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ant")
    parser.add_argument("--backend", default="generalized")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", action="store_true", help="also time first use with an empty, then a warm cache")
    parser.add_argument("--cache-env", default=None, help="env for --cache (default: --env)")
    parser.add_argument("--skip-window", action="store_true", help="only the --cache measurement")
    parser.add_argument("--closed-loop", action="store_true",
                        help="actions from a policy tanh(obs @ W), gradient w.r.t. W (as in training)")
    parser.add_argument("--fused-only", action="store_true",
                        help="time only pure JAX and the default bridge (skips compiling the unfused and residual "
                             "variants; also runs against older checkouts, for before/after figures)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    result = {} if args.skip_window else measure_window(args)
    if args.cache:
        result.update(measure_first_use(args))
    print(json.dumps(result, indent=2))
    if "ratio" in result:
        print(f"bridged (fused) / pure JAX diff-steps/s: {result['ratio']:.3f}")
    rates = result.get("diff_steps_per_s", {})
    if "bridged_rebuild" in rates:
        print(f"bridged, pipeline state rebuilt every step (carry_pipeline = false) / pure JAX: "
              f"{rates['bridged_rebuild'] / rates['pure_jax']:.3f}")


def measure_window(args) -> dict:
    import torch

    import mbmix_fw as mb
    from mbmix_brax import BraxConfig
    from mbmix_brax.bridge import jax, to_jax
    from mbmix_brax.env import BraxEnv

    ctx = mb.BuildContext(device=args.device)
    config = BraxConfig(name=args.env, backend=args.backend, num_envs=args.num_envs, episode_length=10**6)
    env = BraxEnv(config, ctx)
    H, N, A = args.horizon, args.num_envs, env.action_dim
    gen = torch.Generator(device=args.device).manual_seed(0)
    actions = (0.5 * torch.randn(H, N, A, generator=gen, device=args.device)).requires_grad_(True)
    start = env.reset(N, gen)

    class Unfused(BraxEnv):
        """DiffEnv's default composition: ``step`` (one crossing) then ``score`` (another)."""

        def transition(self, state, action, generator=None):
            return self.score(state, action, BraxEnv.transition(self, state, action, generator).next_state)

    unfused = Unfused(config, ctx)
    residuals = BraxEnv(config.model_copy(update={"bridge_backward": "residuals"}), ctx)

    weights = (0.3 * torch.randn(env.obs_dim, A, generator=gen, device=args.device)).requires_grad_(True)
    leaf = weights if args.closed_loop else actions  # what the gradient is taken with respect to

    def bridged(which):
        def run():
            steps = iter(range(H))
            if args.closed_loop:
                policy = lambda obs, g: torch.tanh(obs @ weights)  # noqa: E731
            else:
                policy = lambda obs, g: actions[next(steps)]  # noqa: E731 - open loop, as the JAX baseline
            out = mb.rollout(policy, which, which, mb.Cursor(start, None), H)
            leaf.grad = None
            out.rewards.sum().backward()
            leaf.grad.sum().item()  # wait for the result
        return run

    brax_env = env.brax_env
    keys = jax.random.split(jax.random.PRNGKey(0), N)
    state0 = jax.vmap(brax_env.reset)(keys)
    state0 = state0.replace(pipeline_state=jax.vmap(brax_env.pipeline_init)(
        to_jax(start[:, :env.q_size].contiguous()), to_jax(start[:, env.q_size:].contiguous())))
    state0 = state0.replace(obs=to_jax(env.observe(start).contiguous()))
    step = jax.vmap(brax_env.step)

    def loss(acts, state):
        def body(s, a):
            s = step(s, a)
            return s, s.reward
        return jax.lax.scan(body, state, acts)[1].sum()

    def closed_loop_loss(w, state):
        def body(s, _):
            s = step(s, jax.numpy.tanh(s.obs @ w))
            return s, s.reward
        return jax.lax.scan(body, state, None, length=H)[1].sum()

    grad = jax.jit(jax.grad(closed_loop_loss if args.closed_loop else loss))
    jax_leaf = to_jax(leaf.detach())

    def pure_jax():
        grad(jax_leaf, state0).block_until_ready()

    variants = {"pure_jax": pure_jax, "bridged_fused": bridged(env)}
    if "carry_pipeline" in BraxConfig.model_fields:  # this checkout carries Brax's pipeline state
        variants["bridged_rebuild"] = bridged(BraxEnv(config.model_copy(update={"carry_pipeline": False}), ctx))
    seconds = time_interleaved(variants, args.repeats)
    if args.fused_only:
        rates = {k: H * N / v for k, v in seconds.items()}
        return {"env": args.env, "backend": args.backend, "num_envs": N, "horizon": H, "device": args.device,
                "closed_loop": args.closed_loop, "diff_steps_per_s": {k: round(v, 1) for k, v in rates.items()},
                "ratio": rates["bridged_fused"] / rates["pure_jax"]}
    seconds.update(time_interleaved({"bridged_unfused": bridged(unfused), "bridged_residuals": bridged(residuals)},
                                    args.repeats))
    rates = {k: H * N / v for k, v in seconds.items()}
    with jax.enable_x64(env.x64):  # what "residuals" keeps per env-step, against "recompute" (the inputs)
        shapes = [jax.ShapeDtypeStruct((N, d), jax.numpy.float32) for d in (env.state_dim, A)]
        leaves = jax.eval_shape(lambda x, a: jax.tree_util.tree_leaves(jax.vjp(env._transition.fn, x, a)[1]),
                                *shapes)
    memory = {"residuals": sum(leaf.size * leaf.dtype.itemsize for leaf in leaves) // N,
              "recompute": 4 * (env.state_dim + A)}
    return {"env": args.env, "backend": args.backend, "num_envs": N, "horizon": H, "device": args.device,
            "closed_loop": args.closed_loop, "diff_steps_per_s": {k: round(v, 1) for k, v in rates.items()},
            "backward_bytes_per_env_step": memory,
            "fused_over_unfused": round(rates["bridged_fused"] / rates["bridged_unfused"], 3),
            "residuals_over_pure_jax": round(rates["bridged_residuals"] / rates["pure_jax"], 3),
            "ratio": rates["bridged_fused"] / rates["pure_jax"]}


def measure_first_use(args) -> dict:
    """Build + first differentiable step in two fresh processes sharing one empty compilation cache."""
    env = args.cache_env or args.env
    with tempfile.TemporaryDirectory() as cache:
        environ = {**os.environ, "MBMIX_FW_JAX_CACHE": cache}
        runs = [json.loads(subprocess.run(
            [sys.executable, "-c", FIRST_USE, env, args.backend, str(args.num_envs)], capture_output=True,
            text=True, env=environ, check=True).stdout.strip().splitlines()[-1]) for _ in range(2)]
    return {"first_use_s": {"env": env, "empty_cache": runs[0], "warm_cache": runs[1]},
            "first_use_warm_over_empty": round(runs[1]["total_s"] / runs[0]["total_s"], 3)}

if __name__ == "__main__":
    main()
