"""Does the Sobolev term help a world model of Brax hopper, and is its Jacobian error a contact error?

MB-MIX trains its world model with and without the Sobolev term on a Brax task and logs the state and
gradient errors apart; its failure mode is a Sobolev term "dominated by collision noise". Brax 0.14 has no
Fetch, so this uses **hopper** (``generalized`` backend): the cheapest contact-rich Brax system our plugin
differentiates (a 12-float state, 3 actuators, one foot capsule against the floor, 4 substeps a step, so a full
Jacobian is 12 VJPs answered by one batched recompute); ant (29 floats, four feet, 8 actuators) costs several
times more per step and per Jacobian on a 2-core CPU. ``generalized`` is the backend of the hopper recipes and
of the hopper study in ``benchmarks/RESULTS.md``, and the only one on which the plugin also reports AHAC's
contact stiffness. Any other Brax env and tested backend: ``--env``, ``--backend``.

Data, per seed, the same for every model of that seed: ``--envs`` hoppers from Brax's reset rolled by a fixed
random policy (a ``TanhGaussianPolicy`` seeded by the seed, log-std 0: wide actions, so the hopper hops, falls
and is reset) in ``--windows`` windows of ``--horizon`` steps. Jacobian targets (``--probe-source``):

- ``adjoint`` (default, what the trainer stores): the adjoint tap of the window's backward
  (``mbmix_fw/maths/adjoint_tap.py``): one probe per transition, the unit cotangent that the backward of
  the window's reward sum (no critic: the policy is fixed) brought to ``s'`` and the simulator's VJPs along it;
- ``random``: ``--probes`` random unit probes per transition (``mb.collect_transitions``), each a VJP.

Held out: ``--held-out-windows`` windows of fresh episodes of the same policy (another random stream), with
*full* Jacobians (``mb.collect_jacobians``), and per transition the **contact events**
(``BraxEnv.contact_events``: penetrating contact points summed over the step's substeps). A held-out
transition is *in contact* when it has at least one.

Models (``sobolev_mlp``, ``plugins/mbmix_world_models``, hidden [256, 256], batch 256, same initial weights and the
same minibatch sequence within a seed, so identical normalisation statistics, which the script checks):

- ``mse``: α_s = α_a = 0 (plain next-state MSE; ignores the probes);
- ``sobolev``: α_s = α_a = 1 (the recipes' setting);
- ``smooth``: α = 0.25, ``smoothness`` λ = 1 (``recipes/wall_mbmix_smooth.toml``'s setting: along a probe the
  model learns α/(α+λ) = 1/5 of the simulator's Jacobian; a model smoother than the simulator).

Metrics at each of ``--eval-at`` fit steps, on all held-out transitions and on the contact / free ones
apart (``SobolevMLP.evaluate``, the numbers the trainer logs): ``state`` = mean squared next-state error in
units of σ_Δ (the model's running std of the one-step change), ``J_s``, ``J_a`` = pooled relative Frobenius
error of ``∂s'/∂s`` and ``∂s'/∂a``. Also, per bucket, the share of the pooled Jacobian error
``Σ‖J_model − J_env‖²_F`` that comes from contact rows, next to their share of rows, and the size of the
simulator's Jacobians in contact and free flight: whether the Jacobian error is a contact error.

Summary: IQM over seeds with a 95 % stratified-bootstrap interval (``mb.summarize_scores``) at the last fit
step, and the paired ratio of each model to ``mse`` on the same seed. Writes ``--json`` and prints a markdown
table. ``--quick``: tiny sizes (two seeds, a few fit steps; ``inverted_pendulum`` unless ``--env`` is given),
the whole path in CI.

Run: ``OMP_NUM_THREADS=1 python benchmarks/brax_model_accuracy.py --seeds 5 --json OUT.json`` (one torch
thread; the first Brax compilation takes minutes on a 2-core CPU, later runs load it from the JAX cache).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import mbmix_fw as mb
from mbmix_fw.maths.adjoint_tap import AdjointTap

MODELS = {
    "mse": {"alpha_s": 0.0, "alpha_a": 0.0},
    "sobolev": {"alpha_s": 1.0, "alpha_a": 1.0},
    "smooth": {"alpha_s": 0.25, "alpha_a": 0.25, "smoothness": 1.0},
}
BUCKETS = ("all", "contact", "free")
ERRORS = {"state": "model/state_error", "J_s": "model/jacobian_error_s", "J_a": "model/jacobian_error_a"}
EXPLORATION_LOG_STD = 0.0
"""The fixed policy's log-std: 0 gives actions spread over [-1, 1] (ours; a trained policy's would be narrower)."""


def settings(args) -> dict:
    """The run's sizes: the command line's, or ``--quick``'s tiny ones (where the user did not set them)."""
    quick = {"env": "inverted_pendulum", "probe_source": "random", "probes": 2, "envs": 2, "horizon": 4,
             "windows": 2, "held_out_windows": 1, "fit_steps": 4, "eval_at": [0, 2, 4], "seeds": 2,
             "hidden": [16, 16], "batch_size": 8}
    full = {"env": "hopper", "probe_source": "adjoint", "probes": 4, "envs": 16, "horizon": 16, "windows": 8,
            "held_out_windows": 2, "fit_steps": 2000, "eval_at": [0, 100, 250, 500, 1000, 2000], "seeds": 5,
            "hidden": [256, 256], "batch_size": 256}
    chosen = quick if args.quick else full
    out = {key: getattr(args, key) if getattr(args, key) is not None else default for key, default in chosen.items()}
    out["eval_at"] = sorted({step for step in out["eval_at"] if step <= out["fit_steps"]} | {out["fit_steps"]})
    return out


def build_env(name: str, backend: str, envs: int):
    from mbmix_brax import BraxConfig, BraxEnv

    return BraxEnv(BraxConfig(name=name, backend=backend, num_envs=envs, episode_length=1000))


def finite_rows(batch: mb.TransitionBatch) -> mb.TransitionBatch:
    fields = [v for v in _fields(batch) if v is not None]
    ok = torch.stack([torch.isfinite(v.reshape(len(batch), -1)).all(-1) for v in fields]).all(0)
    return mb.TransitionBatch(*(v[ok] for v in fields))


def explore(env, policy, cursor: mb.Cursor, windows: int, horizon: int, generator: torch.Generator,
            probe_source: str, probes: int) -> tuple[mb.TransitionBatch, mb.Cursor]:
    """``windows`` windows of the fixed policy from ``cursor``: transitions with Jacobian probes (module
    docstring), only the finite ones (the trainer's rule)."""
    act = lambda obs, gen: policy(obs, gen)  # noqa: E731
    parts = []
    for _ in range(windows):
        if probe_source == "adjoint":
            tap = AdjointTap()
            out = mb.rollout(act, env, tap.wrap(env), cursor, horizon, generator)
            (-out.rewards.sum()).backward()  # the cotangents the tap records; the policy's gradient is unused
            policy.zero_grad(set_to_none=True)
            batch = tap.probes()
            if batch is None or len(batch) == 0:
                raise SystemExit(f"{env.config.name}: the window's reward sum sends no cotangent to the states "
                                 "(a constant reward?), so the adjoint tap records nothing; use --probe-source random")
        else:
            with torch.no_grad():
                out = mb.rollout(act, env, env, cursor, horizon, generator)
            flat = [t.reshape(-1, t.shape[-1]) for t in (out.states, out.actions, out.next_states)]
            batch = mb.collect_transitions(env, flat[0], flat[1], probes, generator, next_state=flat[2])
        parts.append(finite_rows(batch))
        cursor = out.end
    return _concat(parts), cursor


def in_chunks(function, size: int, *tensors: torch.Tensor):
    """``function(*tensors)`` on row chunks of exactly ``size`` rows (the last padded by repeating its first
    row, the padding dropped again): each bridged JAX function then compiles for one batch shape, whatever
    the number of rows (XLA compiles per shape, minutes for Brax on a 2-core CPU)."""
    outputs = []
    for start in range(0, len(tensors[0]), size):
        chunk = [t[start:start + size] for t in tensors]
        rows_here = len(chunk[0])
        chunk = [torch.cat([c, c[:1].expand(size - rows_here, *c.shape[1:])]) for c in chunk]
        outputs.append(_trim(function(*chunk), rows_here))
    return _concat(outputs)


def _trim(value, rows_here: int):
    if isinstance(value, mb.TransitionBatch):
        return mb.TransitionBatch(*(None if v is None else v[:rows_here] for v in _fields(value)))
    return value[:rows_here]


def _fields(batch: mb.TransitionBatch) -> tuple:
    return batch.state, batch.action, batch.next_state, batch.probe_u, batch.probe_s, batch.probe_a


def _concat(values: list):
    if isinstance(values[0], mb.TransitionBatch):
        return mb.TransitionBatch(*(None if column[0] is None else torch.cat(column)
                                    for column in zip(*(_fields(v) for v in values))))
    return torch.cat(values)


def held_out_data(env, policy, args, generator: torch.Generator) -> tuple[mb.TransitionBatch, torch.Tensor]:
    """Fresh episodes of the same policy: full Jacobians and each transition's contact events."""
    cursor = mb.Cursor(env.reset(args["envs"], generator), None)
    with torch.no_grad():
        out = mb.rollout(lambda obs, gen: policy(obs, gen), env, env, cursor,
                         args["held_out_windows"] * args["horizon"], generator)
    states, actions, next_states = (t.reshape(-1, t.shape[-1]) for t in (out.states, out.actions, out.next_states))
    chunk = args["envs"] * args["horizon"]
    jacobians = lambda s, a, n: mb.collect_jacobians(env, s, a, next_state=n)  # noqa: E731
    held = finite_rows(in_chunks(jacobians, chunk, states, actions, next_states))
    return held, in_chunks(env.contact_events, chunk, held.state, held.action)


def rows(batch: mb.TransitionBatch, index: torch.Tensor, probes: bool = True) -> mb.TransitionBatch:
    fields = (batch.state, batch.action, batch.next_state)
    if probes and batch.probe_u is not None:
        fields += (batch.probe_u, batch.probe_s, batch.probe_a)
    return mb.TransitionBatch(*(v[index] for v in fields))


def evaluate(model, held: mb.TransitionBatch, in_contact: torch.Tensor) -> dict:
    """Errors on every held-out transition and on the contact and free ones apart, with each bucket's size,
    its simulator Jacobians' size and its part of the pooled squared Jacobian error."""
    buckets = {"all": torch.ones_like(in_contact), "contact": in_contact, "free": ~in_contact}
    out = {}
    for name, mask in buckets.items():
        index = mask.nonzero().squeeze(-1)
        if len(index) == 0:
            out[name] = {"rows": 0}
            continue
        part = rows(held, index)
        errors = model.evaluate(part)
        size_s = float(part.probe_s.pow(2).sum())
        size_a = float(part.probe_a.pow(2).sum())
        out[name] = {"rows": len(index), **{key: errors[metric] for key, metric in ERRORS.items()},
                     "sq_error_s": errors["model/jacobian_error_s"] ** 2 * size_s,
                     "sq_error_a": errors["model/jacobian_error_a"] ** 2 * size_a,
                     "jacobian_norm_s": (size_s / len(index)) ** 0.5, "jacobian_norm_a": (size_a / len(index)) ** 0.5}
    for block in ("s", "a"):
        total = out["all"].get(f"sq_error_{block}", 0.0)
        contact = out["contact"].get(f"sq_error_{block}", 0.0)
        out["all"][f"contact_share_of_J_{block}_error"] = contact / total if total > 0 else float("nan")
    out["all"]["contact_share_of_rows"] = out["contact"]["rows"] / out["all"]["rows"]
    return out


def fit_and_log(model, data: mb.TransitionBatch, held, in_contact, eval_at: list[int], seed: int) -> dict:
    """Fit steps on minibatches from a generator seeded by ``seed`` (the same for every model), evaluating at
    each step of ``eval_at``."""
    order = torch.Generator().manual_seed(seed)
    curve, started, step = {}, time.perf_counter(), 0
    for target in eval_at:
        while step < target:
            index = torch.randint(len(data), (model.batch_size,), generator=order)
            model.fit(rows(data, index, probes=model.probes > 0))
            step += 1
        curve[str(step)] = evaluate(model, held, in_contact)
    return {"curve": curve, "fit_s": time.perf_counter() - started}


def one_seed(env, args, seed: int) -> dict:
    from mbmix_world_models import SobolevConfig, make_sobolev

    torch.manual_seed(seed)
    policy = mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, (64, 64), init_log_std=EXPLORATION_LOG_STD)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    cursor = mb.Cursor(env.reset(args["envs"], generator), None)
    data, _ = explore(env, policy, cursor, args["windows"], args["horizon"], generator, args["probe_source"],
                      args["probes"])
    held, events = held_out_data(env, policy, args, torch.Generator().manual_seed(10_000 + seed))
    train_events = in_chunks(env.contact_events, args["envs"] * args["horizon"], data.state, data.action)
    simulator_s = time.perf_counter() - started
    in_contact = events > 0
    ctx = mb.BuildContext.cpu(seed=seed).with_env(env)
    runs, stats = {}, {}
    for name, fields in MODELS.items():
        config = SobolevConfig(hidden=args["hidden"], batch_size=args["batch_size"], probe_source=args["probe_source"],
                               probes=args["probes"], **fields)
        model = make_sobolev(config, ctx)
        runs[name] = fit_and_log(model, data, held, in_contact, args["eval_at"], seed)
        stats[name] = model.delta_stats.var.clone()
    for name in MODELS:  # the same minibatches => the same σ_Δ: the state errors share their unit
        assert torch.equal(stats[name], stats["mse"]), f"{name}'s statistics differ from mse's"
    target_rows = (data.probe_s.pow(2).sum((1, 2)) + data.probe_a.pow(2).sum((1, 2)))
    train_contact = train_events > 0
    return {
        "seed": seed, "simulator_s": simulator_s, "training_rows": len(data), "held_out_rows": len(held),
        "held_out_contact_rows": int(in_contact.sum()),
        "held_out_events_histogram": {str(int(k)): int(v) for k, v in zip(*torch.unique(events, return_counts=True))},
        "training_contact_share_of_rows": float(train_contact.float().mean()),
        "training_contact_share_of_target_size": float(target_rows[train_contact].sum() / target_rows.sum()),
        "models": runs,
    }


def summary(results: list[dict], last: str) -> dict:
    """Per model and bucket, the IQM [95 % CI] over seeds of each error at fit step ``last``, and the paired
    ratio to ``mse`` (IQM over seeds, and on how many seeds the model is lower)."""
    out = {}
    for name in MODELS:
        for bucket in BUCKETS:
            for key in ERRORS:
                values = [r["models"][name]["curve"][last][bucket].get(key) for r in results]
                base = [r["models"]["mse"]["curve"][last][bucket].get(key) for r in results]
                pairs = [(v, b) for v, b in zip(values, base) if v is not None and b is not None and b > 0]
                if not pairs:
                    continue
                cell = mb.summarize_scores({"x": [v for v, _ in pairs]})["x"]
                ratios = [v / b for v, b in pairs]
                out.setdefault(name, {}).setdefault(bucket, {})[key] = {
                    "iqm": cell.iqm, "low": cell.low, "high": cell.high, "seeds": len(pairs),
                    "ratio_to_mse_iqm": float(mb.iqm(ratios)), "seeds_below_mse": sum(v < b for v, b in pairs)}
    return out


def mean_present(values: list) -> float:
    """The mean of the values that exist (a bucket without rows has none); NaN when none does."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else float("nan")


def table(results: list[dict], summarised: dict, eval_at: list[int]) -> str:
    last = str(eval_at[-1])
    lines = [f"Held-out errors after {last} fit steps, IQM [95 % CI] over {len(results)} seeds; ÷ mse = IQM of the "
             "paired ratio to the plain-MSE model (seeds lower than mse)", "",
             "| model | bucket | rows (mean) | state err | ÷ mse | J_s err | ÷ mse | J_a err | ÷ mse |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in MODELS:
        for bucket in BUCKETS:
            cells = summarised.get(name, {}).get(bucket)
            count = np.mean([r["models"][name]["curve"][last][bucket]["rows"] for r in results])
            if not cells:
                lines.append(f"| {name} | {bucket} | {count:.0f} | — | | — | | — | |")
                continue
            parts = []
            for key in ERRORS:
                c = cells[key]
                ratio = "—" if name == "mse" else f"{c['ratio_to_mse_iqm']:.2f} ({c['seeds_below_mse']}/{c['seeds']})"
                parts += [f"{c['iqm']:.3g} [{c['low']:.3g}, {c['high']:.3g}]", ratio]
            lines.append(f"| {name} | {bucket} | {count:.0f} | " + " | ".join(parts) + " |")
    lines += ["", "Over fit steps (mean over seeds, all held-out transitions; contact / free in brackets):", "",
              "| model | error | " + " | ".join(str(s) for s in eval_at) + " |",
              "|---|---|" + "---|" * len(eval_at)]
    for name in MODELS:
        for key in ERRORS:
            cells = []
            for step in eval_at:
                values = {b: [r["models"][name]["curve"][str(step)][b].get(key) for r in results] for b in BUCKETS}
                mean = {b: np.mean(v) if all(x is not None for x in v) else float("nan") for b, v in values.items()}
                cells.append(f"{mean['all']:.3g} ({mean['contact']:.3g} / {mean['free']:.3g})")
            lines.append(f"| {name} | {key} | " + " | ".join(cells) + " |")
    share = lambda key: np.mean([r["models"][n]["curve"][last]["all"][key] for r in results for n in MODELS])  # noqa: E731
    lines += ["", "Contact, held out: {:.0%} of rows; their part of the pooled squared Jacobian error (mean over seeds "
              "and models): J_s {:.0%}, J_a {:.0%}. Simulator Jacobian size per row ‖J‖_F, contact / free: J_s {} / "
              "{}, J_a {} / {}. Training data: {:.0%} of rows in contact, {:.0%} of the probe targets' squared size."
              .format(share("contact_share_of_rows"), share("contact_share_of_J_s_error"),
                      share("contact_share_of_J_a_error"),
                      *(f"{mean_present([r['models']['mse']['curve'][last][b].get(k) for r in results]):.3g}"
                        for k in ("jacobian_norm_s", "jacobian_norm_a") for b in ("contact", "free")),
                      np.mean([r["training_contact_share_of_rows"] for r in results]),
                      np.mean([r["training_contact_share_of_target_size"] for r in results]))]
    return "\n".join(lines)


def combine(paths: list[Path], out: Path | None) -> int:
    """The seeds of several runs of the same settings (e.g. two processes, ``--first-seed``) as one study."""
    runs = [json.loads(path.read_text()) for path in paths]
    keep = lambda r: {k: v for k, v in r["settings"].items() if k != "seeds"}  # noqa: E731
    if any(keep(r) != keep(runs[0]) for r in runs):
        print("brax_model_accuracy.py: --combine: the runs' settings differ", file=sys.stderr)
        return 2
    results = sorted((seed for r in runs for seed in r["seeds"]), key=lambda r: r["seed"])
    if len({r["seed"] for r in results}) != len(results):
        print("brax_model_accuracy.py: --combine: a seed appears twice", file=sys.stderr)
        return 2
    eval_at = runs[0]["settings"]["eval_at"]
    summarised = summary(results, str(eval_at[-1]))
    text = table(results, summarised, eval_at)
    print(f"combined {len(results)} seeds ({', '.join(str(r['seed']) for r in results)}) from "
          f"{', '.join(str(p) for p in paths)}; commits {sorted({r['commit'] for r in runs})}")
    print(text)
    if out is not None:
        out.write_text(json.dumps({"settings": {**runs[0]["settings"], "seeds": len(results)},
                                   "commit": sorted({r["commit"] for r in runs}), "threads": runs[0]["threads"],
                                   "summary": summarised, "seeds": results, "table": text}, indent=1))
    return 0


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the whole path in seconds (CI)")
    parser.add_argument("--env", default=None, help="Brax env (default hopper; inverted_pendulum with --quick)")
    parser.add_argument("--backend", default="generalized", choices=["generalized", "positional", "spring"])
    parser.add_argument("--envs", type=int, default=None, help="episodes rolled in parallel")
    parser.add_argument("--horizon", type=int, default=None, help="steps per window")
    parser.add_argument("--windows", type=int, default=None, help="training windows per seed")
    parser.add_argument("--held-out-windows", type=int, default=None, help="held-out windows per seed")
    parser.add_argument("--fit-steps", type=int, default=None)
    parser.add_argument("--eval-at", type=int, nargs="+", default=None, help="fit steps at which to evaluate")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0 … N−1")
    parser.add_argument("--first-seed", type=int, default=0, help="start the seeds here (split a study over processes)")
    parser.add_argument("--combine", type=Path, nargs="+", default=None, metavar="JSON",
                        help="run nothing: summarise the seeds of these earlier --json files together")
    parser.add_argument("--hidden", type=int, nargs="+", default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--probe-source", choices=["adjoint", "random"], default=None,
                        help="default adjoint; random with --quick (inverted_pendulum's reward is constant: "
                             "its window backward sends no cotangent to the states)")
    parser.add_argument("--probes", type=int, default=None,
                        help="random probes per transition (--probe-source random; default 4, 2 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.json is not None and not args.json.parent.is_dir():
        print(f"brax_model_accuracy.py: --json: folder {args.json.parent} does not exist", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if args.combine is not None:
        return combine(args.combine, args.json)
    run = {**settings(args), "backend": args.backend}
    env = build_env(run["env"], run["backend"], run["envs"])
    print(f"brax_model_accuracy: {run['env']} ({run['backend']}), {run['seeds']} seeds, {run['envs']} envs × "
          f"{run['windows']} windows × {run['horizon']} steps of training data ({run['probe_source']} probes), "
          f"{run['held_out_windows']} held-out windows with full Jacobians, {run['fit_steps']} fit steps, "
          f"hidden {run['hidden']}, batch {run['batch_size']}, torch threads {torch.get_num_threads()}, "
          f"commit {commit()}", flush=True)
    results = []
    for seed in range(args.first_seed, args.first_seed + run["seeds"]):
        results.append(one_seed(env, run, seed))
        r = results[-1]
        print(f"seed {seed}: {r['training_rows']} training rows, {r['held_out_rows']} held out "
              f"({r['held_out_contact_rows']} in contact), simulator {r['simulator_s']:.0f} s, fits "
              + ", ".join(f"{n} {m['fit_s']:.0f} s" for n, m in r["models"].items()), flush=True)
    summarised = summary(results, str(run["eval_at"][-1]))
    text = table(results, summarised, run["eval_at"])
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps({"settings": run, "commit": commit(), "threads": torch.get_num_threads(),
                                         "summary": summarised, "seeds": results, "table": text}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
