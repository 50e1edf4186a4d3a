"""A Brax env as pure JAX functions of the flat state ``x = concat(q, qd)`` (one env; vmapped by the caller).

One generic mechanism serves every Brax env, so rewards, observations and terminations are Brax's own
code, never rewritten:

- the pipeline state of ``x`` is ``env.pipeline_init(q, qd)`` (forward kinematics and everything the
  backend derives from ``(q, qd)``);
- the Brax ``State`` around it (observation, ``metrics`` and ``info`` dicts that ``env.step`` reads and
  updates) comes from the env's own ``reset`` run on a shallow copy whose ``pipeline_init`` returns that
  pipeline state: the random draws of ``reset`` are discarded, its observation is the observation of ``x``;
- ``transition(x, a)`` is the env's own ``step`` on that state; ``score(x, a, x')`` is ``step`` on a copy
  whose ``pipeline_step`` returns the pipeline state of ``x'``, so a world model's prediction is scored
  by exactly the code that scores the simulator (tested equal to ``env.step``).

Consequences, documented for users:

- The env is Markov in ``(q, qd)``. For ``generalized`` this is Brax's own state, up to the mass-matrix
  inverse, which ``pipeline_init`` computes exactly where a continuing Brax rollout refines the previous
  step's inverse iteratively. ``positional`` and ``spring`` hold maximal coordinates; rebuilding them from
  ``(q, qd)`` every step projects out the joints' constraint error, so multi-step rollouts differ slightly
  from Brax's own (single steps from a state are identical).
- ``terminated(x)`` is Brax's ``done`` of a step that reaches ``x``: every Brax env computes it from the
  reached state alone.
- ``observe(x)`` is the observation ``reset`` gives for ``x``. The envs whose observation includes the
  applied action (``humanoid``, ``humanoidstandup``: actuator forces) see a zero action there; the
  observation returned by ``transition``/``score`` is ``step``'s, with the action, and it is the one the
  rollout gives the policy at the next step (``observe`` serves only a window's first states).
- Actions are passed to Brax unchanged, in ``[-1, 1]``, as Brax's own trainers do.

**The pipeline state carried alongside.** ``transition`` and ``reset`` also return Brax's pipeline state
after the step, flattened to one vector per env (``flatten_pipeline``: every leaf, in tree order; a few
hundred floats for reacher, 1 366 for ant), and ``transition_from_pipeline(p, a)`` steps from such a
vector instead of rebuilding the state from ``(q, qd)``. The env uses it when the state it is given is the
previous transition's own output (:class:`mbmix_brax.env.BraxEnv`): no ``pipeline_init`` per step (forward
kinematics, mass-matrix inverse, constraint Jacobians — the fixed cost that made reacher, 2 frames per
step, slow), and the step is Brax's own ``lax.scan`` step (with the pipeline's refined mass-matrix
inverse, where ``pipeline_init`` computes it exactly: the two paths agree to rounding, tested). The
vector is a differentiable output and input, so gradients flow through the derived quantities exactly
as in Brax's scan.
"""
from __future__ import annotations

import copy
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class BraxFunctions(NamedTuple):
    transition: Any  # (x, a) -> (x', reward, done, obs', pipeline')
    score: Any       # (x, a, x') -> (reward, done, obs')
    observe: Any     # (x,) -> (obs,)
    reset: Any       # (key uint32[2],) -> (x, obs, pipeline)
    transition_from_pipeline: Any  # (pipeline, a) -> (x', reward, done, obs', pipeline')


def _with(env, **methods):
    """A shallow copy of ``env`` whose named methods are replaced (instance attributes win over the class)."""
    clone = copy.copy(env)
    for name, fn in methods.items():
        setattr(clone, name, fn)
    return clone


def brax_functions(env) -> BraxFunctions:
    """The four per-env functions of a Brax ``PipelineEnv`` (see the module docstring)."""
    nq = env.sys.q_size()
    fixed_key = jax.random.PRNGKey(0)

    def flat(pipeline_state):
        return jnp.concatenate([pipeline_state.q, pipeline_state.qd])

    def pipeline_state(x):
        return env.pipeline_init(x[:nq], x[nq:])

    def brax_state(ps):
        return _with(env, pipeline_init=lambda *args, **kwargs: ps).reset(fixed_key)

    def template(dtype):
        """The pipeline state's tree structure and leaf shapes (traced, never computed)."""
        zeros = jnp.zeros(nq, dtype), jnp.zeros(env.sys.qd_size(), dtype)
        return jax.tree_util.tree_flatten(jax.eval_shape(env.pipeline_init, *zeros))

    def flatten_pipeline(ps):
        return jnp.concatenate([jnp.ravel(leaf).astype(ps.q.dtype) for leaf in jax.tree_util.tree_leaves(ps)])

    def unflatten_pipeline(vector):
        leaves, treedef = template(vector.dtype)
        sizes = [leaf.size for leaf in leaves]
        if sum(sizes) != vector.shape[-1]:
            raise ValueError(f"a pipeline vector of {vector.shape[-1]} floats, expected {sum(sizes)}")
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        return treedef.unflatten([vector[o:o + leaf.size].reshape(leaf.shape).astype(leaf.dtype)
                                  for o, leaf in zip(offsets, leaves)])

    def step_from(ps, action, like):
        after = env.step(brax_state(ps), action)
        x_next = flat(after.pipeline_state)
        return (x_next, _scalar(after.reward, like), _scalar(after.done, like), _obs(after),
                flatten_pipeline(after.pipeline_state))

    def transition(x, action):
        return step_from(pipeline_state(x), action, x)

    def transition_from_pipeline(vector, action):
        return step_from(unflatten_pipeline(vector), action, vector)

    def score(x, action, x_next):
        reached = pipeline_state(x_next)
        scorer = _with(env, pipeline_step=lambda *args, **kwargs: reached)
        after = scorer.step(brax_state(pipeline_state(x)), action)
        return _scalar(after.reward, x), _scalar(after.done, x), _obs(after)

    def observe(x):
        return (_obs(brax_state(pipeline_state(x))),)

    def reset(key):
        state = env.reset(key)
        return flat(state.pipeline_state), _obs(state), flatten_pipeline(state.pipeline_state)

    return BraxFunctions(transition, score, observe, reset, transition_from_pipeline)


def contact_stiffness_function(env):
    """``(x, a) -> (stiffness,)``: AHAC's contact signal (:meth:`mbmix_fw.DiffEnv.contact_stiffness`) of the
    step from ``x`` under ``a`` on the ``generalized`` pipeline: ``‖qf_constraint / max(|qdd|, 1)‖`` of the
    state the step reaches (its last substep) -- the constraint forces in generalized coordinates (ground
    contacts and joint limits, N or N·m per degree of freedom) over the generalized accelerations they act
    on, floored at 1 as DiffRL floors ``|acc|``. The other pipelines expose no constraint forces."""
    nq = env.sys.q_size()

    def contact(x, action):
        reached = env.pipeline_step(env.pipeline_init(x[:nq], x[nq:]), action)
        ratio = reached.qf_constraint / jnp.maximum(jnp.abs(reached.qdd), 1.0)
        return (jnp.linalg.norm(ratio),)

    return contact


def contact_events_function(env):
    """``(x, a) -> (events,)``: how many contacts the step from ``x`` under ``a`` went through, on any pipeline:
    the contact points with negative distance (penetrating: where Brax's constraint solver acts) summed over
    the states the step's substeps start from (``x`` and the states after substeps 1 … n−1; the state the
    last substep reaches is the next step's). Each substep is ``pipeline_step`` of a copy of the env with
    one frame (Brax's ``_n_frames``: the step is a ``lax.scan`` of that many pipeline steps). An env whose
    system declares no contact pairs has none (0). A count, not a force: a resting contact counts like an
    impact; :func:`contact_stiffness_function` says how stiff they were."""
    from brax import contact as brax_contact

    nq, frames = env.sys.q_size(), int(env._n_frames)
    one_frame = _with(env, _n_frames=1)

    def penetrating(ps):
        found = brax_contact.get(env.sys, ps.x)
        return jnp.zeros((), ps.q.dtype) if found is None else jnp.sum(found.dist < 0).astype(ps.q.dtype)

    def events(x, action):
        def substep(ps, _):
            return one_frame.pipeline_step(ps, action), penetrating(ps)

        _, counts = jax.lax.scan(substep, env.pipeline_init(x[:nq], x[nq:]), (), frames)
        return (jnp.sum(counts),)

    return events


def _scalar(value, like):
    """Brax returns some constants as Python floats (``done = 0.0``): make them arrays of the state's dtype."""
    return jnp.asarray(value, dtype=like.dtype)


def _obs(state):
    if not isinstance(state.obs, jax.Array):
        raise TypeError("mbmix_brax supports Brax envs with array observations, got "
                        f"{type(state.obs).__name__}")
    return state.obs
