"""JAX functions as differentiable torch functions: jitted forward, jitted ``jax.vjp`` backward, DLPack.

:class:`JaxFunction` wraps a JAX function of arrays returning a tuple of arrays. Called on torch tensors it
runs ``jax.jit(fn)``, with or without autograd. It is built on the core's public bridge
(:class:`mbmix_fw.ExternalFunction`), which checks outputs and gradients, refuses second derivatives
(``create_graph=True`` raises instead of returning zeros) and answers ``P`` Sobolev probes with one call:
here one jitted ``jax.vmap`` of the pullback over the probes, after one recompute. The cotangents of
non-differentiable outputs (termination flags) and of outputs nothing downstream used (a window's last
pipeline state; observations an open-loop policy ignores) arrive as ``None`` and become zeros *inside* the
jitted pullback, where XLA removes the part of the transpose they would feed: on reacher at 32 envs the
pullback of a step whose observation is unused costs about half of one fed torch's zeros. The price: one
pullback compiled per pattern of unused outputs (a rollout shows two or three: a middle step, the last
step, a step whose next state is reset). Its backward comes in three flavours (``backward=``):

- ``"recompute"`` (the Brax env's default): torch keeps only the inputs, and ``backward`` runs one jitted
  ``lambda inputs, cotangents: jax.vjp(fn, *inputs)[1](cotangents)`` -- the forward is evaluated again,
  fused with its transpose in one XLA program, which prunes whatever no used output needs. Memory: a Brax
  step's linearisation has about 1 480 residual arrays, 435 kB per ant env-step (93 kB for reacher), so a
  32-step window of 2 048 ants would hold 28 GB of them; recomputing keeps 148 bytes per ant env-step.
- ``"residuals"``: the forward runs ``jax.jit(lambda *x: jax.vjp(fn, *x))``, keeps the residuals, and
  ``backward`` runs the pullback on them (no second forward).
- ``"auto"``: residuals while they fit, recompute beyond. **The rule**: a call keeps its residuals if the
  residual bytes held alive by all bridged calls of the process (those whose backward has not run and been
  freed yet), plus this call's, stay within :data:`RESIDUAL_MEMORY_FRACTION` (1/8) of the device's memory
  (physical RAM on the CPU, the GPU's total memory on CUDA; JAX's own share of a GPU is 1/2, see
  :mod:`mbmix_brax.jax_setup`); otherwise that call recomputes. The window's length never needs to be
  known: the first steps of a window too long for the budget keep residuals, the rest recompute. A call's
  residual size is measured at its shape's first call (the sum of the residual arrays' bytes). Reacher at
  32 envs holds 3 MB per step, ant at 2 048 envs 0.9 GB. Residuals are not torch tensors: a checkpointed
  rollout segment (``checkpoint_segments``) cannot drop them, which the budget bounds.

  Why ``auto`` is not the default: measured on a 2-core CPU (``benchmarks/brax_bridge.py``, reacher, 32
  envs, 2026-12-01), residuals were about 20 % *slower* per window than recompute once unused outputs'
  cotangents stay ``None``: the recompute is pruned to what the used outputs need, while the residual
  forward linearises every output and hands ~800 arrays back to Python. On ant (64 envs, one round) the
  residuals were faster (its step is ~5x dearer): which wins depends on the env and the machine (a GPU:
  not measured), so both remain settings.

Each ``(variant, shapes, dtypes, pattern of unused outputs)`` compiles once; the no-grad path and the autograd
forward share the ``forward`` executable under ``"recompute"``.

Tensors cross by DLPack both ways without a copy, on the CPU and on CUDA (a CUDA tensor becomes a JAX array
on the same GPU; JAX waits on torch's stream through the DLPack stream protocol, no host synchronisation).
Inputs are made contiguous first; outputs are JAX's buffers viewed as tensors (JAX never writes them again).

``x64=True`` runs every call inside ``jax.enable_x64(True)`` (and ``False`` otherwise), so a float64 env
and a float32 env can live in one process: the flag is part of JAX's compilation key, not a global switch
flipped behind the other env's back.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

import torch

import mbmix_fw as mb

from .jax_setup import configure_jax

jax = configure_jax()


def to_jax(tensor: torch.Tensor) -> Any:
    """A JAX array sharing ``tensor``'s memory (made contiguous and detached first)."""
    return mb.to_foreign(tensor, jax.dlpack.from_dlpack)


def to_torch(array: Any) -> torch.Tensor:
    """A tensor sharing the JAX array's memory."""
    return mb.from_foreign(array)


BACKWARD_MODES = ("auto", "recompute", "residuals")

RESIDUAL_MEMORY_FRACTION = 1 / 8
"""``"auto"``: the share of the device's memory that residuals held alive may take (the module docstring)."""


@functools.lru_cache(maxsize=None)
def device_memory_bytes(device: str) -> int:
    """Total memory of ``device``: the GPU's for CUDA, the machine's physical RAM otherwise."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_properties(torch.device(device)).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class Residuals:
    """One call's JAX pullback and output shapes, counted in :attr:`live_bytes` while it is alive (it lives
    in the autograd graph until backward has run and the graph is freed)."""

    live_bytes = 0  # of every JaxFunction of the process: they share the device

    def __init__(self, pullback, shapes, nbytes: int):
        self.pullback, self.shapes, self.nbytes = pullback, shapes, nbytes
        Residuals.live_bytes += nbytes

    def __del__(self):
        Residuals.live_bytes -= self.nbytes


def _zeros_for_none(outputs, cotangents) -> tuple:
    """Cotangents with each ``None`` (a flag's) replaced by zeros of its output, traced inside the jit."""
    return tuple(jax.numpy.zeros(o.shape, o.dtype) if c is None else c for o, c in zip(outputs, cotangents))


class JaxFunction:
    """``fn(*arrays) -> tuple of arrays`` callable on tensors, differentiable w.r.t. every float input.

    ``differentiable`` marks which outputs carry gradients (others, e.g. termination flags, are marked
    non-differentiable for torch and get zero cotangents). ``backward`` picks how the pullback is obtained
    (see the module docstring). ``outputs`` names the outputs in error messages.
    """

    def __init__(self, fn: Callable[..., tuple], differentiable: Sequence[bool], *, x64: bool = False,
                 name: str | None = None, backward: str = "recompute", outputs: Sequence[str] | None = None):
        if backward not in BACKWARD_MODES:
            raise ValueError(f"backward must be one of {BACKWARD_MODES}, got {backward!r}")
        self.fn, self.x64, self.backward_mode = fn, x64, backward
        self.differentiable = tuple(differentiable)
        self.name = name or getattr(fn, "__name__", "jax_function")
        outputs = tuple(outputs or (f"output {i}" for i in range(len(self.differentiable))))
        self.forward = jax.jit(fn)
        self._residual_bytes: dict[tuple, int] = {}  # per input signature, measured at its first call

        def recompute(inputs, cotangents):
            outs, pullback = jax.vjp(fn, *inputs)
            return pullback(_zeros_for_none(outs, cotangents))

        def batched(inputs, cotangents):
            outs, pullback = jax.vjp(fn, *inputs)
            return jax.vmap(lambda c: pullback(_zeros_for_none(outs, c)))(cotangents)

        if backward != "residuals":
            self.recompute_pullback, self.batched_pullback = jax.jit(recompute), jax.jit(batched)
        if backward != "recompute":
            self.forward_with_pullback = jax.jit(lambda *xs: jax.vjp(fn, *xs))
            # the outputs' shapes are static (ShapeDtypeStructs): they only size the flags' zeros
            self.pullback = jax.jit(lambda pullback, outs, cotangents: pullback(_zeros_for_none(outs, cotangents)),
                                    static_argnums=1)
            self.batched_residual_pullback = jax.jit(lambda pullback, outs, cotangents: jax.vmap(
                lambda c: pullback(_zeros_for_none(outs, c)))(cotangents), static_argnums=1)
        residual_options = {} if backward == "recompute" else {"forward_with_residuals": self._forward_with_residuals}
        self.bridge = mb.ExternalFunction(
            self._forward, self._vjp, batched_vjp=self._batched_vjp, name=self.name, outputs=outputs,
            non_differentiable=[o for o, d in zip(outputs, self.differentiable) if not d],
            materialize_cotangents=False,  # unused outputs: zeros inside the jit, their pullback compiled away
            check_finite=False,  # the trainer skips and counts non-finite updates
            **residual_options)

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.bridge(*tensors)

    # ---- the ExternalFunction callables (tensors in, tensors out)
    def _forward(self, tensors) -> tuple:
        with jax.enable_x64(self.x64):
            return tuple(to_torch(o) for o in self.forward(*(to_jax(t) for t in tensors)))

    def _forward_with_residuals(self, tensors):
        """``"residuals"``, or ``"auto"`` within the budget: outputs and :class:`Residuals`; ``"auto"`` beyond
        it: the plain forward, and the inputs kept for a recompute."""
        key = tuple((t.shape, t.dtype, t.device) for t in tensors)
        if self.backward_mode == "auto" and key in self._residual_bytes:
            budget = RESIDUAL_MEMORY_FRACTION * device_memory_bytes(str(tensors[0].device))
            if Residuals.live_bytes + self._residual_bytes[key] > budget:
                return self._forward(tensors), tuple(tensors)
        with jax.enable_x64(self.x64):
            outputs, pullback = self.forward_with_pullback(*(to_jax(t) for t in tensors))
        if key not in self._residual_bytes:
            self._residual_bytes[key] = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(pullback))
        shapes = tuple(jax.ShapeDtypeStruct(o.shape, o.dtype) for o in outputs)
        return tuple(to_torch(o) for o in outputs), Residuals(pullback, shapes, self._residual_bytes[key])

    def _vjp(self, saved, cotangents) -> tuple:
        return self._pull(saved, cotangents, batched=False)

    def _batched_vjp(self, saved, cotangents) -> tuple:
        return self._pull(saved, cotangents, batched=True)

    def _pull(self, saved, cotangents, batched: bool) -> tuple:
        """``saved``: :class:`Residuals`, or the inputs (recompute)."""
        with jax.enable_x64(self.x64):
            cts = tuple(None if c is None else to_jax(c) for c in cotangents)
            if isinstance(saved, Residuals):
                pull = self.batched_residual_pullback if batched else self.pullback
                grads = pull(saved.pullback, saved.shapes, cts)
            else:
                pull = self.batched_pullback if batched else self.recompute_pullback
                grads = pull(tuple(to_jax(t) for t in saved), cts)
        return tuple(to_torch(g) for g in grads)

    def compiled_shapes(self) -> dict[str, int]:
        """How many executables each variant holds (tests check that a shape compiles once)."""
        names = {"recompute": ("forward", "recompute_pullback"),
                 "residuals": ("forward", "forward_with_pullback", "pullback"),
                 "auto": ("forward", "recompute_pullback", "forward_with_pullback", "pullback")}
        return {name: getattr(self, name)._cache_size() for name in names[self.backward_mode]}
