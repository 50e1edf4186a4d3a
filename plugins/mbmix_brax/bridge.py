"""JAX functions as differentiable torch functions: jitted forward, jitted ``jax.vjp`` backward, DLPack.

:class:`JaxFunction` wraps a JAX function of arrays returning a tuple of arrays. Called on torch tensors it
runs ``jax.jit(fn)``, with or without autograd. It is built on the core's public bridge
(:class:`mbmix_fw.ExternalFunction`), which checks outputs and gradients, refuses second derivatives
(``create_graph=True`` raises instead of returning zeros) and answers ``P`` Sobolev probes with one call:
here one jitted ``jax.vmap`` of the pullback over the probes, after one recompute. The cotangents of
non-differentiable outputs (termination flags) arrive as ``None`` and become zeros inside the jitted
pullback; unused differentiable outputs get torch's zeros, so each shape compiles one pullback whatever
the caller differentiates. Its backward comes in two flavours (``backward=``):

- ``"recompute"`` (default): torch keeps only the inputs, and ``backward`` runs one jitted
  ``lambda inputs, cotangents: jax.vjp(fn, *inputs)[1](cotangents)`` -- the forward is evaluated again,
  fused with its transpose in one XLA program. Why the default: memory. A Brax step's linearisation
  has about 1 480 residual arrays, 435 kB per ant env-step (93 kB for reacher), so a 32-step window of
  2 048 ants would hold 28 GB of them; recomputing keeps 148 bytes per ant env-step. Speed on a CPU
  (``benchmarks/brax_bridge.py``, 2026-11-28): equal for ant at 64 envs, and for reacher at 32; 20 %
  slower for reacher at 256 envs, where the residuals are small and the second forward is not.
- ``"residuals"``: the forward runs ``jax.jit(lambda *x: jax.vjp(fn, *x))``, keeps the residuals, and
  ``backward`` runs the pullback on them (no second forward). For small states at large batches, when
  memory allows.

Either way each ``(variant, shapes, dtypes)`` compiles once; the no-grad path and the autograd forward share
the ``forward`` executable under ``"recompute"``.

Tensors cross by DLPack both ways without a copy, on the CPU and on CUDA (a CUDA tensor becomes a JAX array
on the same GPU; JAX waits on torch's stream through the DLPack stream protocol, no host synchronisation).
Inputs are made contiguous first; outputs are JAX's buffers viewed as tensors (JAX never writes them again).

``x64=True`` runs every call inside ``jax.enable_x64(True)`` (and ``False`` otherwise), so a float64 env
and a float32 env can live in one process: the flag is part of JAX's compilation key, not a global switch
flipped behind the other env's back.
"""
from __future__ import annotations

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


BACKWARD_MODES = ("recompute", "residuals")


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

        def pullback_of(inputs):
            outs, pullback = jax.vjp(fn, *inputs)
            return outs, pullback

        if backward == "recompute":
            def recompute(inputs, cotangents):
                outs, pullback = pullback_of(inputs)
                return pullback(_zeros_for_none(outs, cotangents))

            def batched(inputs, cotangents):
                outs, pullback = pullback_of(inputs)
                return jax.vmap(lambda c: pullback(_zeros_for_none(outs, c)))(cotangents)

            self.recompute_pullback, self.batched_pullback = jax.jit(recompute), jax.jit(batched)
            residual_options = {}
        else:
            self.forward_with_pullback = jax.jit(lambda *xs: jax.vjp(fn, *xs))
            # the outputs' shapes are static (ShapeDtypeStructs): they only size the flags' zeros
            self.pullback = jax.jit(lambda pullback, outs, cotangents: pullback(_zeros_for_none(outs, cotangents)),
                                    static_argnums=1)
            self.batched_pullback = jax.jit(lambda pullback, outs, cotangents: jax.vmap(
                lambda c: pullback(_zeros_for_none(outs, c)))(cotangents), static_argnums=1)
            residual_options = {"forward_with_residuals": self._forward_with_residuals}
        self.bridge = mb.ExternalFunction(
            self._forward, self._vjp, batched_vjp=self._batched_vjp, name=self.name, outputs=outputs,
            non_differentiable=[o for o, d in zip(outputs, self.differentiable) if not d],
            check_finite=False,  # the trainer skips and counts non-finite updates
            **residual_options)

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.bridge(*tensors)

    # ---- the ExternalFunction callables (tensors in, tensors out)
    def _forward(self, tensors) -> tuple:
        with jax.enable_x64(self.x64):
            return tuple(to_torch(o) for o in self.forward(*(to_jax(t) for t in tensors)))

    def _forward_with_residuals(self, tensors):
        with jax.enable_x64(self.x64):
            outputs, pullback = self.forward_with_pullback(*(to_jax(t) for t in tensors))
        shapes = tuple(jax.ShapeDtypeStruct(o.shape, o.dtype) for o in outputs)
        return tuple(to_torch(o) for o in outputs), (pullback, shapes)

    def _vjp(self, saved, cotangents) -> tuple:
        pull = self.recompute_pullback if self.backward_mode == "recompute" else self.pullback
        return self._pull(pull, saved, cotangents)

    def _batched_vjp(self, saved, cotangents) -> tuple:
        return self._pull(self.batched_pullback, saved, cotangents)

    def _pull(self, pull, saved, cotangents) -> tuple:
        """``saved``: the inputs (recompute) or ``(pullback, output shapes)`` (residuals)."""
        with jax.enable_x64(self.x64):
            cts = tuple(None if c is None else to_jax(c) for c in cotangents)
            if self.backward_mode == "recompute":
                grads = pull(tuple(to_jax(t) for t in saved), cts)
            else:
                grads = pull(*saved, cts)
        return tuple(to_torch(g) for g in grads)

    def compiled_shapes(self) -> dict[str, int]:
        """How many executables each variant holds (tests check that a shape compiles once)."""
        names = (("forward", "recompute_pullback") if self.backward_mode == "recompute"
                 else ("forward", "forward_with_pullback", "pullback"))
        return {name: getattr(self, name)._cache_size() for name in names}
