"""JAX functions as differentiable torch functions: jitted forward, jitted ``jax.vjp`` backward, DLPack.

:class:`JaxFunction` wraps a JAX function of arrays returning a tuple of arrays. Called on torch tensors:

- without autograd (``torch.no_grad`` or no input requiring grad) it runs ``jax.jit(fn)``;
- with autograd it runs ``jax.jit(lambda *x: jax.vjp(fn, *x))``: the outputs *and* the residuals of the
  linearisation come back in one call, and ``backward`` runs ``jax.jit(lambda pullback, ct: pullback(ct))``
  on them, so the backward pass costs what ``jax.grad`` costs (no recomputation of the forward).
  The pullback's tree structure comes from the forward's (cached) trace, so the backward compiles once per
  shape too.

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


class JaxFunction:
    """``fn(*arrays) -> tuple of arrays`` callable on tensors, differentiable w.r.t. every float input.

    ``differentiable`` marks which outputs carry gradients (others, e.g. termination flags, are marked
    non-differentiable for torch and get zero cotangents). Each ``(variant, shapes, dtypes)`` compiles once.
    """

    def __init__(self, fn: Callable[..., tuple], differentiable: Sequence[bool], *, x64: bool = False,
                 name: str | None = None):
        self.fn, self.x64 = fn, x64
        self.differentiable = tuple(differentiable)
        self.name = name or getattr(fn, "__name__", "jax_function")
        self.forward = jax.jit(fn)
        self.forward_with_pullback = jax.jit(lambda *xs: jax.vjp(fn, *xs))
        self.pullback = jax.jit(lambda pullback, cotangents: pullback(cotangents))

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return _Bridge.apply(self, *tensors)
        with jax.enable_x64(self.x64):
            outputs = self.forward(*(to_jax(t) for t in tensors))
        return tuple(to_torch(o) for o in outputs)

    def compiled_shapes(self) -> dict[str, int]:
        """How many executables each variant holds (tests check that a shape compiles once)."""
        return {name: getattr(self, name)._cache_size()
                for name in ("forward", "forward_with_pullback", "pullback")}


class _Bridge(torch.autograd.Function):
    @staticmethod
    def forward(ctx, function: JaxFunction, *tensors: torch.Tensor):
        with jax.enable_x64(function.x64):
            outputs, pullback = function.forward_with_pullback(*(to_jax(t) for t in tensors))
        ctx.function, ctx.pullback = function, pullback
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
            input_grads = function.pullback(ctx.pullback, cotangents)
        return (None, *(to_torch(g) for g in input_grads))


def _torch_dtype(jax_dtype) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[str(jax_dtype)]
