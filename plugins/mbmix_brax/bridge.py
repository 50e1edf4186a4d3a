"""JAX functions as differentiable torch functions: jitted forward, jitted ``jax.vjp`` backward, DLPack.

:class:`JaxFunction` wraps a JAX function of arrays returning a tuple of arrays. Called on torch tensors it
runs ``jax.jit(fn)``, with or without autograd. Its backward comes in two flavours (``backward=``):

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

from .jax_setup import configure_jax

jax = configure_jax()


def to_jax(tensor: torch.Tensor) -> Any:
    """A JAX array sharing ``tensor``'s memory (made contiguous and detached first)."""
    return jax.dlpack.from_dlpack(tensor.detach().contiguous())


def to_torch(array: Any) -> torch.Tensor:
    """A tensor sharing the JAX array's memory."""
    return torch.from_dlpack(array)


BACKWARD_MODES = ("recompute", "residuals")


class JaxFunction:
    """``fn(*arrays) -> tuple of arrays`` callable on tensors, differentiable w.r.t. every float input.

    ``differentiable`` marks which outputs carry gradients (others, e.g. termination flags, are marked
    non-differentiable for torch and get zero cotangents). ``backward`` picks how the pullback is obtained
    (see the module docstring).
    """

    def __init__(self, fn: Callable[..., tuple], differentiable: Sequence[bool], *, x64: bool = False,
                 name: str | None = None, backward: str = "recompute"):
        if backward not in BACKWARD_MODES:
            raise ValueError(f"backward must be one of {BACKWARD_MODES}, got {backward!r}")
        self.fn, self.x64, self.backward_mode = fn, x64, backward
        self.differentiable = tuple(differentiable)
        self.name = name or getattr(fn, "__name__", "jax_function")
        self.forward = jax.jit(fn)
        if backward == "recompute":
            self.recompute_pullback = jax.jit(lambda inputs, cotangents: jax.vjp(fn, *inputs)[1](cotangents))
        else:
            self.forward_with_pullback = jax.jit(lambda *xs: jax.vjp(fn, *xs))
            self.pullback = jax.jit(lambda pullback, cotangents: pullback(cotangents))

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return _Bridge.apply(self, *tensors)
        return tuple(to_torch(o) for o in self._run_forward(tensors))

    def _run_forward(self, tensors) -> tuple:
        with jax.enable_x64(self.x64):
            return self.forward(*(to_jax(t) for t in tensors))

    def compiled_shapes(self) -> dict[str, int]:
        """How many executables each variant holds (tests check that a shape compiles once)."""
        names = (("forward", "recompute_pullback") if self.backward_mode == "recompute"
                 else ("forward", "forward_with_pullback", "pullback"))
        return {name: getattr(self, name)._cache_size() for name in names}


class _Bridge(torch.autograd.Function):
    @staticmethod
    def forward(ctx, function: JaxFunction, *tensors: torch.Tensor):
        if function.backward_mode == "recompute":
            outputs = function._run_forward(tensors)
            ctx.save_for_backward(*tensors)
        else:
            with jax.enable_x64(function.x64):
                outputs, ctx.pullback = function.forward_with_pullback(*(to_jax(t) for t in tensors))
        ctx.function = function
        ctx.output_meta = [(o.shape, o.dtype) for o in outputs]
        result = tuple(to_torch(o) for o in outputs)
        ctx.mark_non_differentiable(*(r for r, d in zip(result, function.differentiable) if not d))
        return result

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        function = ctx.function
        with jax.enable_x64(function.x64):
            cotangents = tuple(
                jax.numpy.zeros(shape, dtype) if g is None or not d else to_jax(g.to(_torch_dtype(dtype)))
                for g, d, (shape, dtype) in zip(grads, function.differentiable, ctx.output_meta))
            if function.backward_mode == "recompute":
                inputs = tuple(to_jax(t) for t in ctx.saved_tensors)
                input_grads = function.recompute_pullback(inputs, cotangents)
            else:
                input_grads = function.pullback(ctx.pullback, cotangents)
        return (None, *(to_torch(g) for g in input_grads))


def _torch_dtype(jax_dtype) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[str(jax_dtype)]
