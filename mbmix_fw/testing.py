"""Helpers for plugin authors' tests: a tiny linear env and contract checks."""
from __future__ import annotations

import torch

from .contracts.context import BuildContext
from .contracts.env import DiffEnv


class LinearEnv(DiffEnv):
    """``s' = A s + B a`` with reward ``-(|s|² + 0.1|a|²)``: small, exact, differentiable.

    Tests use it wherever a real plugin env would add nothing but time. ``step`` follows the input
    dtype, so float64 finite-difference checks work on it.
    """

    def __init__(self, state_dim: int = 3, action_dim: int = 2, num_envs: int = 8,
                 episode_length: int = 20, ctx: BuildContext | None = None, seed: int = 0):
        ctx = ctx or BuildContext.cpu()
        g = torch.Generator().manual_seed(seed)
        self.A = (torch.eye(state_dim) + 0.1 * torch.randn(state_dim, state_dim, generator=g)).to(ctx.device)
        self.B = (0.5 * torch.randn(state_dim, action_dim, generator=g)).to(ctx.device)
        self.num_envs, self.state_dim, self.obs_dim = num_envs, state_dim, state_dim
        self.action_dim, self.episode_length, self.device = action_dim, episode_length, ctx.device

    def reset(self, n, generator=None):
        return torch.randn(n, self.state_dim, generator=generator, device=self.device)

    def step(self, state, action, generator=None):
        return state @ self.A.T.to(state.dtype) + action @ self.B.T.to(state.dtype)

    def reward(self, state, action, next_state):
        return -(next_state.pow(2).sum(-1) + 0.1 * action.pow(2).sum(-1))

    def observe(self, state):
        return state


def _seeded(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _flat_grads(output: torch.Tensor, inputs, cotangent: torch.Tensor):
    grads = torch.autograd.grad(output, inputs, cotangent, allow_unused=True, retain_graph=True)
    return [None if g is None else g.detach() for g in grads]


def check_env(env: DiffEnv, *, batch_sizes=(1, 2, 5), seed: int = 0, surrogate_step: bool = False,
              fd_eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-7, action_range: float = 0.9) -> None:
    """Check that ``env`` keeps the :class:`~mbmix_fw.DiffEnv` contract; raise ``AssertionError`` listing
    every violation found.

    Checks, on states from ``env.reset`` and actions uniform in ``[-action_range, action_range]``:

    - attributes: positive integer sizes, ``device``;
    - shapes, dtypes and devices of ``reset``/``step``/``reward``/``observe``/``terminated``; ``reset``
      is detached; every method keeps the input dtype (float32 and float64); outputs are finite;
    - ``reset`` and ``step`` replay exactly under generators seeded alike;
    - batch-size independence: ``reward``, ``observe``, ``terminated`` (and ``step`` with
      ``generator=None``, unless ``surrogate_step``) give each row the same result whatever the batch;
    - autograd: ``step``, ``reward(s, a, step(s, a))`` and ``observe`` pass a non-zero, finite gradient
      to ``state`` and ``action`` (``observe``: to ``state``);
    - float64 central finite differences of ``step`` (noise replayed from a generator seeded alike),
      ``reward`` (w.r.t. ``state``, ``action``, ``next_state`` as independent inputs) and ``observe``
      match autograd's directional derivatives (``rtol``/``atol``). ``surrogate_step=True`` skips the
      ``step`` check, for envs whose step gradient is an estimator rather than the derivative of the
      sampled value (the tabular MDP's relaxations);
    - a short :func:`mbmix_fw.rollout` with resets runs and yields finite rewards.
    """
    from .maths.rollouts import Cursor, rollout  # late import: testing helpers only

    problems: list[str] = []

    def expect(ok, message: str) -> bool:
        if not bool(ok):
            problems.append(message)
        return bool(ok)

    for name in ("num_envs", "state_dim", "obs_dim", "action_dim", "episode_length"):
        value = getattr(env, name, None)
        expect(isinstance(value, int) and value >= 1, f"env.{name} must be a positive int, got {value!r}")
    if problems:
        raise AssertionError("\n".join(problems))
    device = torch.device(env.device)
    S, A, O = env.state_dim, env.action_dim, env.obs_dim
    n = max(batch_sizes)

    def actions(count: int, dtype, gen_seed: int) -> torch.Tensor:
        u = torch.rand(count, A, generator=_seeded(gen_seed, "cpu"), dtype=torch.float64)
        return ((2 * u - 1) * action_range).to(device=device, dtype=dtype)

    # reset: shape, detached, deterministic under a seeded generator
    state = env.reset(n, _seeded(seed, device))
    expect(state.shape == (n, S), f"reset(n) must have shape [n, {S}], got {tuple(state.shape)}")
    expect(state.is_floating_point(), f"reset must return a float tensor, got {state.dtype}")
    expect(state.device.type == device.type, f"reset must return tensors on {device}, got {state.device}")
    expect(not state.requires_grad, "reset must return detached states")
    expect(torch.isfinite(state).all(), "reset returned non-finite states")
    expect(torch.equal(state, env.reset(n, _seeded(seed, device))),
           "reset(n, generator) must give the same states under generators seeded alike")
    if problems:
        raise AssertionError("\n".join(problems))

    for dtype in (torch.float32, torch.float64):
        s, a = state.to(dtype), actions(n, dtype, seed + 1)
        nxt = env.step(s, a, _seeded(seed + 2, device))
        r = env.reward(s, a, nxt)
        o = env.observe(nxt)
        done = env.terminated(nxt)
        for what, value, shape in (("step", nxt, (n, S)), ("reward", r, (n,)), ("observe", o, (n, O))):
            expect(value.shape == shape, f"{what} must have shape {list(shape)}, got {list(value.shape)}")
            expect(value.dtype == dtype, f"{what} must keep the input dtype {dtype}, got {value.dtype}")
            expect(torch.isfinite(value).all(), f"{what} returned non-finite values ({dtype})")
        expect(done.shape == (n,) and done.dtype == torch.bool,
               f"terminated must return bool [{n}], got {done.dtype} {list(done.shape)}")
        expect(torch.equal(nxt, env.step(s, a, _seeded(seed + 2, device))),
               f"step must replay exactly under generators seeded alike ({dtype})")
    if problems:  # wrong shapes would broadcast through every later check (and a rollout) without end
        raise AssertionError(f"{type(env).__name__} breaks the DiffEnv contract:\n- " + "\n- ".join(problems))

    # batch-size independence
    s, a = state.to(torch.float64), actions(n, torch.float64, seed + 1)
    full_next = env.step(s, a, None) if not surrogate_step else env.step(s, a, _seeded(seed + 2, device))
    full = {
        "reward": env.reward(s, a, full_next),
        "observe": env.observe(s),
        "terminated": env.terminated(s),
    }
    if not surrogate_step:
        full["step(generator=None)"] = full_next
    for size in batch_sizes:
        for start in range(0, n - size + 1, size):
            rows = slice(start, start + size)
            part = {
                "reward": env.reward(s[rows], a[rows], full_next[rows]),
                "observe": env.observe(s[rows]),
                "terminated": env.terminated(s[rows]),
            }
            if not surrogate_step:
                part["step(generator=None)"] = env.step(s[rows], a[rows], None)
            for what, value in part.items():
                expect(value.shape == full[what][rows].shape and torch.allclose(value, full[what][rows], rtol=1e-12, atol=1e-12)
                       if value.is_floating_point() else torch.equal(value, full[what][rows]),
                       f"{what} of rows {start}..{start + size - 1} differs between batch sizes {size} and {n}")

    # autograd through step, reward and observe
    cot = torch.Generator().manual_seed(seed + 3)
    s = state.to(torch.float64).clone().requires_grad_(True)
    a = actions(n, torch.float64, seed + 1).requires_grad_(True)
    nxt = env.step(s, a, _seeded(seed + 2, device))
    r = env.reward(s, a, nxt)
    o = env.observe(s)
    for what, out, inputs, names in (
        ("step", nxt, (s, a), ("state", "action")),
        ("reward(s, a, step(s, a))", r, (s, a), ("state", "action")),
        ("observe", o, (s,), ("state",)),
    ):
        if not expect(out.requires_grad, f"{what} has no autograd graph (is something detached?)"):
            continue
        u = torch.randn(out.shape, generator=cot, dtype=torch.float64).to(device)
        for name, g in zip(names, _flat_grads(out, inputs, u)):
            if expect(g is not None, f"{what} is not connected to {name} in the autograd graph"):
                expect(torch.isfinite(g).all(), f"gradient of {what} w.r.t. {name} is not finite")
                expect(g.abs().sum() > 0, f"gradient of {what} w.r.t. {name} is identically zero")

    # float64 finite differences of directional derivatives
    s0 = state.to(torch.float64)
    a0 = actions(n, torch.float64, seed + 1)
    nxt0 = env.step(s0, a0, _seeded(seed + 2, device)).detach()

    def direction(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=cot, dtype=torch.float64).to(device)

    def fd_check(what: str, fn, inputs: tuple[torch.Tensor, ...]) -> None:
        dirs = tuple(direction(x) for x in inputs)
        leaves = tuple(x.clone().requires_grad_(True) for x in inputs)
        out = fn(*leaves)
        if not out.requires_grad:
            return  # reported above: no autograd graph
        u = direction(out)
        grads = _flat_grads(out, leaves, u)
        auto = sum(((g if g is not None else torch.zeros_like(d)) * d).reshape(n, -1).sum(-1)
                   for g, d in zip(grads, dirs))
        with torch.no_grad():
            plus = fn(*(x + fd_eps * d for x, d in zip(inputs, dirs)))
            minus = fn(*(x - fd_eps * d for x, d in zip(inputs, dirs)))
        numeric = ((plus - minus) / (2 * fd_eps) * u).reshape(n, -1).sum(-1)
        close = torch.isclose(auto, numeric, rtol=rtol, atol=atol * max(1.0, float(numeric.abs().max())))
        expect(close.all(), f"{what}: autograd directional derivative {auto.tolist()} does not match "
                            f"float64 finite differences {numeric.tolist()}")

    if not surrogate_step:
        fd_check("step", lambda x, y: env.step(x, y, _seeded(seed + 2, device)), (s0, a0))
    fd_check("reward", env.reward, (s0, a0, nxt0))
    fd_check("observe", env.observe, (s0,))

    # a short rollout with resets inside the window
    steps = min(env.episode_length + 2, 64)
    start = Cursor(env.reset(n, _seeded(seed, device)),
                   torch.full((n,), max(env.episode_length - 2, 0), dtype=torch.long, device=device))
    policy_gen = torch.Generator().manual_seed(seed + 4)

    def random_policy(obs, generator):
        u = torch.rand(obs.shape[0], A, generator=policy_gen, dtype=torch.float64)
        return ((2 * u - 1) * action_range).to(device=device, dtype=obs.dtype)

    out = rollout(random_policy, env, env, start, steps, _seeded(seed + 5, device))
    expect(torch.isfinite(out.rewards).all(), "rewards of a short rollout are not finite")
    expect(out.truncated.any() or out.terminated.any(), "a rollout across episode_length saw no episode end")

    if problems:
        raise AssertionError(f"{type(env).__name__} breaks the DiffEnv contract:\n- " + "\n- ".join(problems))


def user_error_lines(stderr: str) -> list[str]:
    """The messages of a CLI run's user errors, each checked to be one ``mbmix-fw: error: …`` line with no
    traceback: what a test of a bad input asserts on."""
    lines = stderr.strip().splitlines()
    assert lines and all(line.startswith("mbmix-fw: error: ") for line in lines), stderr
    assert "Traceback" not in stderr
    return [line.removeprefix("mbmix-fw: error: ") for line in lines]


def tiny_trainer(env: DiffEnv | None = None, estimator=None, scheduler=None, *, horizon: int = 4,
                 world_model=None, out_dir=None, critic: dict | None = None, policy=None, optim=None,
                 progress: bool = False, **run):
    """A trainer small enough for a unit test, overriding only what the test is about.

    Defaults: :class:`LinearEnv` (4 envs, 10-step episodes), ``shac`` with window ``horizon``, the
    ``model_free`` scheduler, one critic pass of two minibatches, 2 evaluation envs, no periodic
    evaluation and no periodic checkpoint (``checkpoint_every = 1000``), 4 iterations. ``critic`` updates
    :class:`~mbmix_fw.CriticSettings`; ``policy`` and ``optim`` are settings objects passed through; every
    other keyword is a :class:`~mbmix_fw.RunSettings` field.
    The default estimator and scheduler are built through the registry, as a recipe would build them, so
    this module imports no plugin. Why one helper: tests that each spelled these settings drifted apart.
    """
    from .building.registry import default_registry
    from .contracts.context import BuildContext
    from .contracts.settings import CriticSettings, OptimSettings, PolicySettings, RunSettings
    from .training.trainer import Trainer

    env = env or LinearEnv(num_envs=4, episode_length=10)
    registry = default_registry()
    ctx = BuildContext.cpu().with_env(env)
    if estimator is None:
        shac = registry.estimator.get("shac")
        estimator = registry.estimator.build(shac.config(kind="shac", horizon=horizon), ctx)
    if scheduler is None:
        model_free = registry.scheduler.get("model_free")
        scheduler = registry.scheduler.build(model_free.config(kind="model_free"), ctx)
    run = {"iterations": 4, "eval_envs": 2, "eval_every": 0, "checkpoint_every": 1000, **run}
    critic = {"iterations": 1, "minibatches": 2, **(critic or {})}
    return Trainer(env, estimator, scheduler, world_model=world_model, run=RunSettings(**run),
                   critic=CriticSettings(**critic), policy=policy or PolicySettings(), optim=optim or OptimSettings(),
                   out_dir=out_dir, progress=progress)
