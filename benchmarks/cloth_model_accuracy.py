"""Are a world model's Jacobians usable on the cloth? ``sobolev_mlp`` vs ``particle_gnn`` (issue 16).

Data (the same for every model): ``--envs`` cloths (``cloth_fold``, 8×8, the recipe's physics) rolled for
``--steps-per-env`` steps by a fixed random policy (a seeded ``TanhGaussianPolicy``, log-std 0 so the
grippers move in every direction), each transition with one random Jacobian probe (what the recipes
collect). Held out: ``--held-out`` transitions of fresh episodes of the same policy, with *full* Jacobians
(``mb.collect_jacobians``: 390 backward passes each).

Models: ``sobolev_mlp`` with ``recipes/cloth_mix.toml``'s settings, ``particle_gnn`` with its defaults, and
each with α_s = α_a = 0 (plain MSE). Each gets ``--fit-steps`` fit steps of its own batch size, minibatches
drawn from the same transitions by the same generator.

Metrics, all in the env's raw coordinates and the same for every model:

- ``state err``: mean of ``((ŝ' − s') / σ_Δ)²`` over held-out entries, ``σ_Δ`` the per-entry std of the
  one-step change in the training data (1 = as bad as predicting the mean change);
- ``J_s err``, ``J_a err``: pooled relative Frobenius error of ``∂s'/∂s`` and ``∂s'/∂a`` (exact);
- ``drift@k``: mean particle position error (cm) after ``k`` model steps open loop (the held-out episodes'
  actions), k = 1, 4, 16;
- ``cos@H``: cosine between the policy gradient of the mean ``H``-step return through the model and through
  the simulator, from the same start states with the same action noise (``mb.rollout``, ``dynamics=model``
  vs ``dynamics=env``, same generator state), H = 1, 4, 16, for a fixed random policy (log-std −1, the
  trainer's initial policy);
- ``fit ms/tr``: wall time of the fit steps per transition seen; ``× mlp``: its ratio to ``sobolev_mlp``'s,
  measured in the same run (on a shared machine the ratio moves with the load: repeat it);
- for the ``integrator`` particle model, the spring stiffness per unit mass it learned for each spring kind,
  next to the env's.

``--particle-set FIELD=VALUE …`` changes the particle model's settings (e.g. ``architecture="message_passing"``).

Run: ``OMP_NUM_THREADS=1 python benchmarks/cloth_model_accuracy.py`` (a few minutes on one core). The last
line gives the particle model's action-Jacobian error and its H = 4 cosine.
"""
from __future__ import annotations

import argparse
import time

import torch

import mbmix_fw as mb
from mbmix_world_models import ParticleGNNConfig, SobolevConfig, make_particle_gnn, make_sobolev
from mbmix_warp import ClothFold, ClothFoldConfig

HORIZONS = (1, 4, 16)


def roll_states(env: ClothFold, policy, envs: int, steps: int, generator: torch.Generator):
    """``(states [T, N, S], actions [T, N, A], next_states)`` of ``steps`` steps of ``envs`` fresh cloths."""
    start = mb.Cursor(env.reset(envs, generator), None)
    with torch.no_grad():
        out = mb.rollout(lambda obs, gen: policy(obs, gen), env, env, start, steps, generator)
    return out.states, out.actions, out.next_states


def training_data(env, policy, args, generator) -> mb.TransitionBatch:
    states, actions, next_states = roll_states(env, policy, args.envs, args.steps_per_env, generator)
    flat = [t.reshape(-1, t.shape[-1]) for t in (states, actions, next_states)]
    return mb.collect_transitions(env, flat[0], flat[1], 1, generator, next_state=flat[2])


def rows(batch: mb.TransitionBatch, index: torch.Tensor, probes: bool) -> mb.TransitionBatch:
    fields = (batch.state, batch.action, batch.next_state)
    if probes:
        fields += (batch.probe_u, batch.probe_s, batch.probe_a)
    return mb.TransitionBatch(*(v[index] for v in fields))


def train(model, data: mb.TransitionBatch, steps: int) -> float:
    """``steps`` fits on minibatches drawn by a fixed generator; returns seconds per transition seen."""
    order = torch.Generator().manual_seed(1)
    started = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(len(data), (model.batch_size,), generator=order)
        model.fit(rows(data, index, probes=model.probes > 0))
    return (time.perf_counter() - started) / (steps * model.batch_size)


def drift(model, env, states, actions) -> dict[int, float]:
    """Mean particle position error (cm) after k open-loop model steps from the episodes' first states."""
    P = env.particles
    sim, pred, out = states[0], states[0], {}
    with torch.no_grad():
        for k in range(max(HORIZONS)):
            sim, pred = env.step(sim, actions[k]), model.step(pred, actions[k])
            if k + 1 in HORIZONS:
                gap = (pred[:, :3 * P] - sim[:, :3 * P]).reshape(-1, P, 3).norm(dim=-1)
                out[k + 1] = 100 * float(gap.mean())
    return out


def policy_gradient(policy, env, dynamics, start: torch.Tensor, horizon: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    out = mb.rollout(lambda obs, gen: policy(obs, gen), env, dynamics, mb.Cursor(start, None), horizon, generator)
    grads = torch.autograd.grad(out.rewards.sum(0).mean(), list(policy.parameters()), allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                      for p, g in zip(policy.parameters(), grads)])


def gradient_cosines(model, env, policy, starts: torch.Tensor) -> dict[int, float]:
    out = {}
    for horizon in HORIZONS:
        g_sim = policy_gradient(policy, env, env, starts, horizon, seed=7)
        g_model = policy_gradient(policy, env, model, starts, horizon, seed=7)
        out[horizon] = float(torch.nn.functional.cosine_similarity(g_sim, g_model, dim=0))
    return out


def learned_stiffness(model) -> list[float]:
    """Per spring kind, the integrator's force per unit mass per metre of stretch at rest length and zero
    closing speed (1/s²): the slope of its learned pair law, by a central difference."""
    with torch.no_grad():
        dtype = model.net.log_stiffness.dtype
        strain = torch.tensor([-1e-3, 1e-3], dtype=dtype).expand(len(model.pairs), 2)  # [E, B = 2]
        force = model.pair_law(dtype)(strain, torch.zeros_like(strain)).double()
        slope = (force[:, 1] - force[:, 0]) / (2e-3 * model.pair_rest.double())
        return [float(slope[model.pair_kinds == kind][0]) for kind in range(3)]


def state_error(model, held: mb.TransitionBatch, scale: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model.step(held.state, held.action) - held.next_state) / scale).pow(2).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--steps-per-env", type=int, default=40)
    parser.add_argument("--held-out", type=int, default=24)
    parser.add_argument("--fit-steps", type=int, default=400)
    parser.add_argument("--models", nargs="*", default=["sobolev_mlp", "sobolev_mlp α=0", "particle_gnn",
                                                        "particle_gnn α=0"])
    parser.add_argument("--particle-set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="particle_gnn config fields for its rows (e.g. message_width=0 batch_size=64)")
    args = parser.parse_args()
    particle_fields = {k: eval(v, {}) for k, v in (item.split("=", 1) for item in args.particle_set)}
    torch.manual_seed(0)
    ctx = mb.BuildContext.cpu(seed=0)
    env = ClothFold(ClothFoldConfig(num_envs=8, grid_size=8, episode_length=40, substeps=8), ctx)
    ctx = ctx.with_env(env)
    explorer = mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, (64, 64), init_log_std=0.0)
    generator = torch.Generator().manual_seed(0)
    data = training_data(env, explorer, args, generator)
    scale = (data.next_state - data.state).std(0).clamp_min(1e-6)
    held_states, held_actions, held_next = roll_states(env, explorer, args.held_out, max(HORIZONS), generator)
    pick = torch.arange(args.held_out) % max(HORIZONS)  # held-out transitions from every stage of the episodes
    idx = torch.arange(args.held_out)
    held = mb.collect_jacobians(env, held_states[pick, idx], held_actions[pick, idx], next_state=held_next[pick, idx])
    policy = mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, (64, 64))
    starts = held_states[pick, idx]

    configs = {
        "sobolev_mlp": lambda alpha: make_sobolev(SobolevConfig(hidden=[256, 256], alpha_s=alpha, alpha_a=alpha,
                                                                probes=1, batch_size=128), ctx),
        "particle_gnn": lambda alpha: make_particle_gnn(ParticleGNNConfig(alpha_s=alpha, alpha_a=alpha,
                                                                               **particle_fields), ctx),
    }
    print(f"cloth 8×8: {len(data)} training transitions (1 probe each), {len(held)} held out with full "
          f"Jacobians; {args.fit_steps} fit steps per model; torch threads: {torch.get_num_threads()}; "
          f"particle_gnn settings: {particle_fields or 'defaults'}")
    header = (f"{'model':<18}{'state err':>10}{'J_s err':>9}{'J_a err':>9}{'drift@1':>9}{'@4':>7}{'@16':>7}"
              f"{'cos@1':>7}{'@4':>7}{'@16':>7}{'fit ms/tr':>10}{'× mlp':>7}")
    print(header)
    results, baseline = {}, None
    for name in args.models:
        kind, _, ablation = name.partition(" ")
        model = configs[kind](0.0 if ablation else 1.0)
        cost = train(model, data, args.fit_steps)
        baseline = cost if name == "sobolev_mlp" else baseline
        errors = model.evaluate(held)
        d, c = drift(model, env, held_states, held_actions), gradient_cosines(model, env, policy, starts)
        results[name] = (errors, c)
        ratio = f"{cost / baseline:7.2f}" if baseline else f"{'-':>7}"
        print(f"{name:<18}{state_error(model, held, scale):10.3f}{errors['model/jacobian_error_s']:9.3f}"
              f"{errors['model/jacobian_error_a']:9.3f}{d[1]:9.2f}{d[4]:7.2f}{d[16]:7.2f}"
              f"{c[1]:7.2f}{c[4]:7.2f}{c[16]:7.2f}{cost * 1e3:10.3f}{ratio}", flush=True)
        if kind == "particle_gnn" and model.architecture == "integrator":
            c_ = env.config
            truth = [k / (c_.mass / env.particles) for k in (c_.stretch_stiffness, c_.shear_stiffness,
                                                              c_.bend_stiffness)]
            print(f"  learned spring stiffness / mass (stretch, shear, bend): "
                  f"{', '.join(f'{k:.0f}' for k in learned_stiffness(model))} 1/s²; the env's: "
                  f"{', '.join(f'{k:.0f}' for k in truth)}")
    if "particle_gnn" in results:
        errors, c = results["particle_gnn"]
        print(f"particle_gnn: action-Jacobian error {errors['model/jacobian_error_a']:.3f}, "
              f"policy-gradient cosine at H = 4: {c[4]:.3f}")


if __name__ == "__main__":
    main()
