"""Jacobian probes of a differentiable simulator, the targets of Sobolev world-model training.

A probe is a vector-Jacobian product taken with the simulator's own adjoint: for a unit vector ``u``
on the output side, ``uᵀ∂s'/∂s`` and ``uᵀ∂s'/∂a``. One backward pass per probe, whatever the
simulator is (pure torch, a JAX or Warp bridge), so Sobolev training needs nothing from an env beyond
a differentiable ``step``.

Why random unit vectors: for ``u`` uniform on the unit sphere of ``R^S``, ``E[u uᵀ] = I / S``, so for
any matrix ``M`` with ``S`` rows ``S · E‖uᵀM‖² = ‖M‖²_F``. A probe loss is therefore an unbiased
estimate of the squared Frobenius error of a whole Jacobian, divided by ``S`` (see
``tests/core/maths/test_probes.py``), at ``1/S`` of the cost of the full Jacobian.

Process noise: probes are taken of the *noise-free* step ``dynamics.step(s, a, None)``. Env noise is
additive (the :class:`~mbmix_fw.DiffEnv` contract draws it from the generator and adds it), so it
does not change the Jacobian; the stored ``next_state`` can still be the real, noisy one from the
rollout (pass ``next_state``).
"""
from __future__ import annotations

import torch

from .rollouts import Dynamics
from ..contracts.world_model import TransitionBatch


def random_unit_vectors(n: int, probes: int, dim: int, generator: torch.Generator | None = None,
                        *, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[n, probes, dim]`` independent vectors uniform on the unit sphere of ``R^dim``.

    Drawn as normalised standard Gaussians on the generator's device, then moved to ``device``, so
    the same generator gives the same vectors on every device.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn(n, probes, dim, generator=generator, device=gen_device, dtype=dtype)
    return (z / z.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)).to(device or gen_device)


_UNBATCHABLE: set[type] = set()
"""Dynamics classes whose backward failed under ``is_grads_batched`` (vmap); they use the loop."""


def vector_jacobian_products(dynamics: Dynamics, state: torch.Tensor, action: torch.Tensor,
                             u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(s', uᵀ∂s'/∂s, uᵀ∂s'/∂a)`` of the noise-free step at ``(state, action)``, all detached.

    ``state [B, S]``, ``action [B, A]``, ``u [B, P, S]`` → ``s' [B, S]``, ``[B, P, S]``, ``[B, P, A]``.
    Partial derivatives: the inputs are detached copies, so nothing flows through a policy that
    produced ``action`` from ``state``.

    One forward, then the ``P`` backward passes. Measured on the 2-core CPU sandbox (pendulum and a
    17-state linear env, B = 64…1024): one vmapped backward (``is_grads_batched=True``) is 2× faster
    than a loop at P = 4 and 3× at P = 8, the loop 1.4× faster at P = 1. So P = 1 loops and P > 1
    vmaps. A bridge built on :class:`mbmix_fw.ExternalFunction` (the Warp and Brax envs) is vmapped: it
    answers the ``P`` cotangents with one ``batched_vjp`` call, one recompute of the step
    (``benchmarks/bridge_probes.py``); any other foreign backward that cannot be vmapped raises inside
    vmap, and that class then uses the loop for the rest of the process.
    An out-of-memory error propagates instead (it says nothing about vmap support).
    """
    s = state.detach().clone().requires_grad_(True)
    a = action.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = dynamics.step(s, a, None)
    u = u.to(out.dtype)
    probes = u.shape[1]
    if probes > 1 and type(dynamics) not in _UNBATCHABLE:
        try:
            g_s, g_a = torch.autograd.grad(out, (s, a), grad_outputs=u.transpose(0, 1),
                                           retain_graph=True, allow_unused=True, is_grads_batched=True)
        except (torch.OutOfMemoryError, MemoryError):
            raise  # out of memory is not "this backward cannot be vmapped": never a silent permanent slow path
        except Exception:  # noqa: BLE001 - a foreign backward fails under vmap in its own way (RuntimeError,
            # NotImplementedError, a JAX TypeError…); the loop below re-raises real bugs
            _UNBATCHABLE.add(type(dynamics))
        else:
            g_s = torch.zeros(probes, *s.shape, dtype=s.dtype, device=s.device) if g_s is None else g_s
            g_a = torch.zeros(probes, *a.shape, dtype=a.dtype, device=a.device) if g_a is None else g_a
            return out.detach(), g_s.transpose(0, 1).detach(), g_a.transpose(0, 1).detach()
    rows_s, rows_a = [], []
    for p in range(probes):
        g_s, g_a = torch.autograd.grad(out, (s, a), grad_outputs=u[:, p],
                                       retain_graph=p < probes - 1, allow_unused=True)
        rows_s.append(torch.zeros_like(s) if g_s is None else g_s)
        rows_a.append(torch.zeros_like(a) if g_a is None else g_a)
    return out.detach(), torch.stack(rows_s, 1).detach(), torch.stack(rows_a, 1).detach()


def collect_transitions(dynamics: Dynamics, state: torch.Tensor, action: torch.Tensor, probes: int,
                        generator: torch.Generator | None = None, *,
                        next_state: torch.Tensor | None = None) -> TransitionBatch:
    """Transitions ``(s, a, s')`` with ``probes`` random Jacobian probes each, ready for a buffer.

    ``state [B, S]`` and ``action [B, A]`` may carry autograd history (they are detached). ``probes``
    unit vectors per transition are drawn from ``generator``; ``probes=0`` returns states only and
    runs no backward pass (the plain-MSE model). ``next_state`` is stored when given — pass the
    rollout's real (possibly noisy) next states; otherwise the noise-free step is stored.
    """
    if probes < 0:
        raise ValueError(f"probes must be >= 0, got {probes}")
    state, action = state.detach(), action.detach()
    if probes == 0:
        if next_state is None:
            with torch.no_grad():
                next_state = dynamics.step(state, action, None)
        return TransitionBatch(state.clone(), action.clone(), next_state.detach().clone())
    u = random_unit_vectors(state.shape[0], probes, state.shape[1], generator,
                            device=state.device, dtype=state.dtype)
    clean_next, probe_s, probe_a = vector_jacobian_products(dynamics, state, action, u)
    stored_next = clean_next if next_state is None else next_state.detach().clone()
    return TransitionBatch(state.clone(), action.clone(), stored_next, u, probe_s, probe_a)


def collect_jacobians(dynamics: Dynamics, state: torch.Tensor, action: torch.Tensor, *,
                      next_state: torch.Tensor | None = None) -> TransitionBatch:
    """Transitions carrying the *full* Jacobians, as ``S`` probes along the basis vectors.

    ``probe_u[b] = I_S``, so ``probe_s[b] = ∂s'/∂s`` ``[S, S]`` and ``probe_a[b] = ∂s'/∂a`` ``[S, A]``
    exactly. Any consumer of probes (``WorldModel.evaluate``, ``fit``) then computes exact Jacobian
    errors. Costs ``S`` backward passes: meant for evaluation on small envs.
    """
    state, action = state.detach(), action.detach()
    n, dim = state.shape
    u = torch.eye(dim, device=state.device, dtype=state.dtype).expand(n, dim, dim).contiguous()
    clean_next, probe_s, probe_a = vector_jacobian_products(dynamics, state, action, u)
    stored_next = clean_next if next_state is None else next_state.detach().clone()
    return TransitionBatch(state.clone(), action.clone(), stored_next, u, probe_s, probe_a)


FULL_JACOBIAN_MAX_DIM = 64
"""``collect_eval_transitions`` takes full Jacobians when ``state_dim + action_dim`` is at most this."""


def collect_eval_transitions(dynamics: Dynamics, state: torch.Tensor, action: torch.Tensor,
                             generator: torch.Generator | None = None, *, probes: int = 16,
                             next_state: torch.Tensor | None = None,
                             full_max_dim: int = FULL_JACOBIAN_MAX_DIM) -> TransitionBatch:
    """Held-out transitions for :meth:`WorldModel.evaluate`: full Jacobians on small envs
    (``S + A <= full_max_dim``, exact error), else ``probes`` random probes (a ratio estimate)."""
    if state.shape[1] + action.shape[1] <= full_max_dim:
        return collect_jacobians(dynamics, state, action, next_state=next_state)
    return collect_transitions(dynamics, state, action, probes, generator, next_state=next_state)
