"""``BraxEnv``: a batch of Brax envs as an :class:`mbmix_fw.DiffEnv` (state ``concat(q, qd)``).

Each method is one crossing of the JAX bridge (:mod:`mbmix_brax.bridge`) running a vmapped function from
:mod:`mbmix_brax.functional`: ``transition`` (physics + reward + termination + next observation, what the
rollout calls on the simulator), ``score`` (the same for a world model's predicted state), ``observe`` and
``reset``. ``step``, ``reward`` and ``terminated`` reuse the executables of ``transition`` and ``score``,
so a batch shape compiles at most these four functions (each a forward and, when differentiated, its
backward; see ``bridge_backward``). The rollout observes only a window's first states: later steps take
the transition's ``next_obs``, and reset rows the observations ``reset`` returns with them
(:meth:`BraxEnv.reset_done_observed`), so a simulated step is one crossing each way.

**Brax's pipeline state is carried alongside** (``BraxConfig.carry_pipeline``, on by default): a
transition also returns Brax's pipeline state after the step (a differentiable ``[N, D]`` tensor, see
:mod:`mbmix_brax.functional`), which the env remembers with the next state it returned. When the next
``transition`` is given that very tensor (same object, not modified in place: the rollout's next step), it
steps from the remembered pipeline state instead of rebuilding it from ``(q, qd)`` — Brax's own scan step;
any other state (a world model's prediction, a checkpoint, a detached copy, a probe's) falls back to
``pipeline_init``. Resets keep the carry: fresh rows take the pipeline state Brax's reset computed. The
remembered tensors are the last step's only (the state by a weak reference).

dtypes: the JAX side computes in float32, or float64 with ``float64 = true``; tensors keep the caller's
dtype (inputs are cast to the JAX dtype, outputs back), and ``reset`` returns the run's dtype
(``BuildContext.dtype``), so the trainer's float32 networks meet float32 observations either way.
"""
from __future__ import annotations

import functools
import inspect
import weakref

import torch

import mbmix_fw as mb

from .bridge import JaxFunction, jax, to_jax, to_torch
from .configs import BraxConfig
from .functional import brax_functions, contact_events_function, contact_stiffness_function
from .quiet import quiet_brax


class BraxEnv(mb.DiffEnv):
    """``num_envs`` copies of one Brax env; stateless like every :class:`mbmix_fw.DiffEnv` (see the module)."""

    def __init__(self, config: BraxConfig, ctx: mb.BuildContext | None = None):
        ctx = ctx or mb.BuildContext.cpu()
        self.config = config
        self.device, self.dtype = torch.device(ctx.device), ctx.dtype
        self.num_envs, self.episode_length = config.num_envs, config.episode_length
        self.x64 = config.float64
        if self.device.type == "cuda":
            require_jax_gpu()
        self.jax_dtype = torch.float64 if config.float64 else torch.float32
        (self.brax_env, self._transition, self._score, self._observe, self._reset,
         self._transition_from_pipeline, self._transition_state_only) = bridged_functions(
            config.name, config.backend, config.float64, tuple(sorted(config.brax_kwargs().items())),
            config.bridge_backward)
        self.carry_pipeline = config.carry_pipeline
        self._carried: tuple | None = None  # (weakref to a state, its version, its pipeline vector)
        sys = self.brax_env.sys
        self.q_size, self.qd_size = sys.q_size(), sys.qd_size()
        self.state_dim, self.action_dim = self.q_size + self.qd_size, self.brax_env.action_size
        if config.backend != "generalized":
            self.contact_stiffness = None  # only the generalized pipeline exposes constraint forces
        with jax.enable_x64(self.x64):  # shapes only: tracing, no compilation
            probe = jax.ShapeDtypeStruct((1, self.state_dim), jax.numpy.float64 if self.x64 else jax.numpy.float32)
            self.obs_dim = int(jax.eval_shape(self._observe.fn, probe)[0].shape[-1])

    # ---- the DiffEnv contract ----
    def reset(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._reset_with_obs(n, generator)[0]

    def transition(self, state, action, generator=None) -> mb.Transition:
        if not self.carry_pipeline:  # no pipeline output: its pullback (derived terms of x') is not paid for
            next_state, reward, done, next_obs = self._call(self._transition_state_only, state, action)
            return mb.Transition(next_state, reward, done > 0.5, next_obs)
        pipeline = self._carried_pipeline(state)
        if pipeline is None:
            outputs = self._call(self._transition, state, action)
        else:
            outputs = self._call(self._transition_from_pipeline, pipeline, action)
        next_state, reward, done, next_obs, next_pipeline = (o.to(state.dtype) for o in outputs)
        self._carry(next_state, next_pipeline)
        return mb.Transition(next_state, reward, done > 0.5, next_obs)

    def score(self, state, action, next_state) -> mb.Transition:
        reward, done, next_obs = self._call(self._score, state, action, next_state)
        return mb.Transition(next_state, reward, done > 0.5, next_obs)

    def step(self, state, action, generator=None):
        return self.transition(state, action, generator).next_state

    def reward(self, state, action, next_state):
        return self.score(state, action, next_state).reward

    def observe(self, state):
        return self._call(self._observe, state)[0]

    def contact_stiffness(self, state, action, next_state):
        """AHAC's contact signal ``[N]`` of each step (``generalized`` backend only: see
        :func:`mbmix_brax.functional.contact_stiffness_function`; recomputes the step, no gradient). On the
        other backends the env reports none (the attribute is ``None``)."""
        with torch.no_grad():
            function = contact_function(self.config.name, self.config.float64,
                                        tuple(sorted(self.config.brax_kwargs().items())), self.config.bridge_backward)
            return self._call(function, state.detach(), action.detach())[0]

    def contact_events(self, state, action):
        """Contacts each step went through ``[N]`` (counts as floats, every backend): penetrating contact points
        summed over the step's substeps (:func:`mbmix_brax.functional.contact_events_function`; recomputes
        the step, no gradient). Not part of the ``DiffEnv`` contract: for studies that split a model's errors
        by contact (``benchmarks/brax_model_accuracy.py``)."""
        with torch.no_grad():
            function = contact_events_bridged(self.config.name, self.config.backend, self.config.float64,
                                              tuple(sorted(self.config.brax_kwargs().items())),
                                              self.config.bridge_backward)
            return self._call(function, state.detach(), action.detach())[0]

    def terminated(self, state):
        with torch.no_grad():
            action = torch.zeros(state.shape[0], self.action_dim, dtype=state.dtype, device=state.device)
            return self.score(state, action, state).terminated

    def reset_done(self, state, done, generator=None):
        return self._reset_rows(state, None, done, generator)[0]

    def reset_done_observed(self, next_state, next_obs, done, generator=None):
        return self._reset_rows(next_state, next_obs, done, generator)

    def _reset_rows(self, state, obs, done, generator):
        """Fresh states and their observations come from one ``reset`` call, so nothing crosses the bridge
        to observe them. On the CPU, asking whether any row is done is free, so a step where no episode
        ends calls nothing at all; on CUDA fresh states are drawn for every row and selected by ``done``
        (no host synchronisation per step). ``obs = None``: states only."""
        if state.device.type == "cpu" and not bool(done.any()):
            return state, obs
        carried = self._carried_pipeline(state)
        fresh, fresh_obs, fresh_pipeline = self._reset_with_obs(state.shape[0], generator, keep=False)
        rows = done.unsqueeze(-1)
        new_state = torch.where(rows, fresh.to(state.dtype), state)
        if carried is not None:
            self._carry(new_state, torch.where(rows, fresh_pipeline.to(carried.dtype), carried))
        return new_state, None if obs is None else torch.where(rows, fresh_obs.to(obs.dtype), obs)

    # ---- the carried pipeline state ----
    def _carried_pipeline(self, state: torch.Tensor) -> torch.Tensor | None:
        """The pipeline vector remembered with ``state``, if ``state`` is that very tensor, unmodified."""
        carried = self._carried
        if not self.carry_pipeline or carried is None or carried[0]() is not state or state._version != carried[1]:
            return None
        return carried[2]

    def _carry(self, state: torch.Tensor, pipeline: torch.Tensor) -> None:
        if self.carry_pipeline:
            self._carried = (weakref.ref(state), state._version, pipeline)

    # ---- plumbing ----
    def _call(self, function: JaxFunction, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        dtype = tensors[0].dtype
        outputs = function(*(t.to(self.jax_dtype) for t in tensors))
        return tuple(o.to(dtype) for o in outputs)

    def _reset_with_obs(self, n: int, generator: torch.Generator | None, keep: bool = True):
        """States ``[n, S]`` (run dtype, detached), their observations and pipeline vectors from Brax's own
        reset, one key per row drawn from ``generator`` (so seeded runs replay), without leaving the device.
        ``keep``: remember the pipeline vectors with the returned states (see the module docstring)."""
        device = generator.device if generator is not None else self.device
        seeds = torch.randint(0, 2**31 - 1, (n, 2), generator=generator, device=device, dtype=torch.int32)
        with jax.enable_x64(self.x64):
            keys = jax.lax.bitcast_convert_type(to_jax(seeds.to(self.device)), jax.numpy.uint32)
            state, obs, pipeline = self._reset(keys)
        state, pipeline = to_torch(state).to(self.dtype), to_torch(pipeline).to(self.dtype)
        if keep:
            self._carry(state, pipeline)
        return state, to_torch(obs).to(self.dtype), pipeline


@functools.lru_cache(maxsize=None)
def bridged_functions(name: str, backend: str, float64: bool, kwargs: tuple, backward: str = "recompute"):
    """The Brax env and its bridged functions, shared by every ``BraxEnv`` of one configuration in a process
    (``num_envs`` and ``episode_length`` aside): an evaluation env, a resumed run or the next recipe in a
    test reuses the traced and compiled functions instead of tracing Brax again."""
    config = BraxConfig(name=name, backend=backend, float64=float64, env_kwargs=dict(kwargs))
    brax_env = make_brax_env(config)
    fns = brax_functions(brax_env)
    vmap, options = jax.vmap, {"x64": float64, "backward": backward}
    return (
        brax_env,
        JaxFunction(vmap(fns.transition), (True, True, False, True, True), name="transition",
                    outputs=("next_state", "reward", "done", "next_obs", "pipeline"), **options),
        JaxFunction(vmap(fns.score), (True, False, True), name="score", outputs=("reward", "done", "next_obs"),
                    **options),
        JaxFunction(vmap(fns.observe), (True,), name="observe", outputs=("obs",), **options),
        jax.jit(vmap(fns.reset)),
        JaxFunction(vmap(fns.transition_from_pipeline), (True, True, False, True, True),
                    name="transition from the carried pipeline state",
                    outputs=("next_state", "reward", "done", "next_obs", "pipeline"), **options),
        JaxFunction(vmap(lambda x, a: fns.transition(x, a)[:4]), (True, True, False, True), name="transition",
                    outputs=("next_state", "reward", "done", "next_obs"), **options),
    )


@functools.lru_cache(maxsize=None)
def contact_function(name: str, float64: bool, kwargs: tuple, backward: str) -> JaxFunction:
    """The bridged contact signal of a ``generalized`` env (compiled on first use, shared per configuration)."""
    brax_env = bridged_functions(name, "generalized", float64, kwargs, backward)[0]
    return JaxFunction(jax.vmap(contact_stiffness_function(brax_env)), (False,), name="contact", x64=float64)


@functools.lru_cache(maxsize=None)
def contact_events_bridged(name: str, backend: str, float64: bool, kwargs: tuple, backward: str) -> JaxFunction:
    """The bridged contact-event count of an env (compiled on first use, shared per configuration)."""
    brax_env = bridged_functions(name, backend, float64, kwargs, backward)[0]
    return JaxFunction(jax.vmap(contact_events_function(brax_env)), (False,), name="contact events", x64=float64)


def require_jax_gpu() -> None:
    """Tensors on a GPU cross to JAX on the same GPU: a CPU-only jaxlib cannot take them."""
    try:
        jax.devices("cuda")
    except RuntimeError:
        raise mb.UserError("env 'brax' on a CUDA device needs a CUDA build of jax "
                           "(pip install -U 'jax[cuda12]'), or run with --device cpu") from None


def make_brax_env(config: BraxConfig):
    """The Brax env named by ``config``, after checking the name and ``env_kwargs`` against the installed brax."""
    with quiet_brax():
        import brax.envs

    available = sorted(brax.envs._envs)  # brax's registry: get_environment raises a bare KeyError
    if config.name not in available:
        raise mb.UserError(f"env.name: '{config.name}' is not an env of the installed brax; "
                           f"available: {', '.join(available)}")
    cls = brax.envs._envs[config.name]
    check_env_kwargs(config.name, cls, config.env_kwargs)
    with jax.enable_x64(config.float64), quiet_brax():
        return cls(backend=config.backend, **config.brax_kwargs())


def accepted_kwargs(cls) -> list[str]:
    """Keyword arguments a Brax env class accepts: its own, plus ``PipelineEnv``'s when it forwards ``**kwargs``."""
    with quiet_brax():
        import brax.envs

    params = inspect.signature(cls.__init__).parameters
    names = [n for n, p in params.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        pipeline = inspect.signature(brax.envs.PipelineEnv.__init__).parameters
        names += [n for n in pipeline if n not in ("self", "sys") and n not in names]
    return sorted(n for n in names if n != "backend")


def check_env_kwargs(name: str, cls, kwargs: dict) -> None:
    accepted = accepted_kwargs(cls)
    for key in kwargs:
        if key not in accepted:
            raise mb.UserError(f"env.env_kwargs.{key}: brax env '{name}' has no keyword argument '{key}'; "
                               f"accepted: {', '.join(accepted)} (the backend is set by env.backend)")
