"""Bridge an external differentiable step (JAX, Warp, NumPy, a C++ simulator with adjoints) into torch
autograd: :class:`ExternalFunction`, whose docstring is the contract (``help(mb.ExternalFunction)``), and the
DLPack helpers :func:`to_foreign`, :func:`from_foreign`, :func:`current_stream_handle`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..errors import MbmixError, UserError

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class BridgeError(UserError, RuntimeError):
    """A bridged function broke its contract (wrong shape, dtype, device, non-finite gradient, second
    derivative asked for) or raised inside its ``forward`` / ``vjp``. The message names the function and
    the output, input or direction. A user error (exit 2): the fix is in the plugin's callables, not in
    mbmix-fw."""


def _called(function: "ExternalFunction", direction: str, callee: Callable, *args: Any) -> Any:
    """``callee(*args)``, with an exception from inside it re-raised as a :class:`BridgeError` that says
    which bridged function and which direction failed (a backward runs inside autograd, where the
    traceback no longer shows which simulator was being differentiated). mbmix-fw's own errors and
    running out of memory pass unchanged."""
    try:
        return callee(*args)
    except (MbmixError, torch.OutOfMemoryError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the user's code, attributed and chained
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BridgeError(f"{function.name}: {direction} raised {type(exc).__name__}"
                          + (f": {first}" if first else "")) from exc


def to_foreign(tensor: torch.Tensor, from_dlpack: Callable[[Any], Any]) -> Any:
    """``tensor`` as another library's array sharing its memory: ``from_dlpack`` is that library's
    DLPack importer (``jax.dlpack.from_dlpack``, ``wp.from_dlpack``, ``numpy.from_dlpack``…). The tensor is
    detached and made contiguous first; the importer asks torch for the stream to order on (CUDA)."""
    return from_dlpack(tensor.detach().contiguous())


def from_foreign(array: Any) -> torch.Tensor:
    """A tensor sharing the memory of any DLPack-capable array (torch passes its current stream)."""
    return torch.from_dlpack(array)


def current_stream_handle(device: torch.device) -> int | None:
    """Torch's current ``cudaStream_t`` on ``device`` as an integer, or ``None`` off CUDA."""
    if device.type != "cuda":
        return None
    return torch.cuda.current_stream(device).cuda_stream


class ExternalFunction:
    """``forward``/``vjp`` callables on tuples of tensors as a torch-differentiable function.

    A simulator written outside torch has a ``forward`` and, for gradients, a vector-Jacobian product;
    ``ExternalFunction(forward, vjp, name=..., outputs=...)`` is a callable on torch tensors that torch
    can differentiate, returning one tensor per name in ``outputs``.

    **Arguments.** ``name`` names the function in every error. ``outputs`` names the outputs (their
    number is checked); ``non_differentiable`` lists those that carry no gradient (flags, indices: marked
    so for torch, their cotangents are ``None``). ``output_shapes(inputs) -> shapes`` (optional) declares
    each output's shape. ``dtypes`` are the float dtypes accepted for the inputs. ``check_finite``
    (default False) makes a non-finite input gradient from finite cotangents an error; see *Checks*.

    **The callables.**

    - ``forward(inputs) -> outputs``: ``inputs`` a tuple of tensors (detached, contiguous, on one
      device), ``outputs`` a tuple of tensors, one per name in ``outputs=``, on the inputs' device (the
      callee converts with :func:`to_foreign` / :func:`from_foreign`, DLPack, no copy);
    - ``vjp(saved, cotangents) -> input_grads``: ``cotangents`` one entry per output: ``None`` for a
      non-differentiable output, else a tensor of the output's shape and dtype (zeros where nothing flows
      back; ``None`` instead with ``materialize_cotangents=False``, for a callee that builds its zeros
      inside a compiled pullback, at the price of one compilation per pattern of ``None`` entries);
      ``input_grads`` one tensor per input, of exactly its shape, dtype and device, or ``None`` (no
      gradient).

    An exception raised inside ``forward``, ``vjp`` or ``batched_vjp`` reaches the caller as a
    :class:`BridgeError` naming the function and the direction (``"spring: vjp (backward) raised
    ValueError: …"``), chained to the original (``mbmix-fw -v`` shows its traceback): a backward runs
    inside torch's autograd engine, far from the line that called the simulator.

    What ``saved`` is depends on the backward:

    - **recompute** (default): ``saved`` is the inputs; ``vjp`` runs the step again and its adjoint. The
      autograd graph keeps only the inputs of each step, whatever the simulator holds internally.
    - **residuals**: pass ``forward_with_residuals(inputs) -> (outputs, residuals)``; under autograd it is
      called instead of ``forward`` and ``saved`` is its ``residuals`` (anything: a JAX pullback, a Warp
      tape). No second forward, more memory. ``forward`` still serves calls without autograd.

    **Batched cotangents.** ``torch.autograd.grad(..., is_grads_batched=True)``
    (``mb.vector_jacobian_products`` with ``P > 1`` probes) runs the backward under torch's vmap with
    ``P`` cotangents per output. The bridge unwraps them and calls ``batched_vjp(saved, cotangents)``
    once, cotangents ``[P, *output shape]``, expecting input gradients ``[P, *input shape]``: one
    recompute answering ``P`` probes. Without ``batched_vjp`` it calls ``vjp`` ``P`` times (correct, ``P``
    recomputes). This uses torch's private legacy-vmap helpers (``torch._remove_batch_dim`` /
    ``_add_batch_dim``, the ``is_grads_batched`` backend in torch 2.x); if they change, the batched call
    raises and ``vector_jacobian_products`` falls back to its loop.

    **Checks**, each a :class:`BridgeError` naming the function and the output or input: outputs must be
    tensors on the inputs' device; differentiable outputs must be of the inputs' float dtype and, when
    ``output_shapes`` is given, of the declared shape (a ``[N]`` reward returned as ``[N, 1]`` would
    otherwise broadcast silently downstream); input gradients must match their input's shape, dtype and
    device exactly (torch would otherwise sum-reduce a broadcastable gradient or cast it without a word).
    **Non-finite gradients** pass by default: one env whose simulator adjoint is NaN must not stop the
    others learning (the trainer zeroes non-finite action-gradient rows and counts them,
    ``guard/nonfinite_action_grads``, and skips a non-finite update). ``check_finite=True`` makes a
    non-finite input gradient from finite cotangents an error instead, for a plugin's own tests of its
    adjoint (it costs a device synchronisation per backward on CUDA). **Second derivatives**: a bridge
    has none, so a backward asked to build a graph (``create_graph=True``) raises instead of returning
    gradients torch would treat as constants (silent zero second derivatives).

    **Streams (CUDA).** ``forward`` and ``vjp`` run with torch's current stream being the one to order
    work on (the autograd engine sets it to the forward's stream in backward). A callee enqueues on it:
    :func:`current_stream_handle` gives the raw ``cudaStream_t`` for libraries that take one (Warp's
    ``Stream(cuda_stream=...)``), and DLPack's stream protocol orders JAX against it without a host sync.

    **Adjoint tap.** Nothing to do here: the trainer's generic tap (identity autograd functions around
    each simulator step, :mod:`mbmix_fw.maths`) sees the cotangents and input gradients of bridged steps
    as of any torch-native one.
    """

    def __init__(self, forward: Callable, vjp: Callable, *, name: str, outputs: Sequence[str],
                 non_differentiable: Sequence[str] = (), forward_with_residuals: Callable | None = None,
                 batched_vjp: Callable | None = None, output_shapes: Callable | None = None,
                 dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
                 materialize_cotangents: bool = True, check_finite: bool = False):
        unknown = [o for o in non_differentiable if o not in outputs]
        if unknown:
            raise ValueError(f"{name}: non_differentiable names unknown outputs {unknown}; outputs are {list(outputs)}")
        self.forward, self.vjp, self.name = forward, vjp, name
        self.outputs = tuple(outputs)
        self.differentiable = tuple(o not in non_differentiable for o in self.outputs)
        self.forward_with_residuals, self.batched_vjp = forward_with_residuals, batched_vjp
        self.output_shapes, self.dtypes = output_shapes, tuple(dtypes)
        self.materialize_cotangents, self.check_finite = materialize_cotangents, check_finite

    @property
    def backward_mode(self) -> str:
        return "recompute" if self.forward_with_residuals is None else "residuals"

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            return _ExternalStep.apply(self, *inputs)
        inputs = self.prepare(inputs)
        return self.checked_outputs(inputs, _called(self, "forward", self.forward, inputs))

    # ---- checks (public so a plugin's own tests can call them) ----
    def prepare(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Detached contiguous inputs, after checking they share a device and an accepted float dtype."""
        inputs = tuple(t.detach().contiguous() for t in inputs)
        devices = {t.device for t in inputs}
        if len(devices) > 1:
            raise BridgeError(f"{self.name}: inputs are on several devices {sorted(map(str, devices))}")
        bad = [(i, t.dtype) for i, t in enumerate(inputs) if t.is_floating_point() and t.dtype not in self.dtypes]
        if bad:
            raise BridgeError(f"{self.name}: input {bad[0][0]} is {bad[0][1]}; accepted float dtypes: "
                              f"{', '.join(map(str, self.dtypes))}")
        return inputs

    def float_dtype(self, inputs) -> torch.dtype | None:
        return next((t.dtype for t in inputs if t.is_floating_point()), None)

    def checked_outputs(self, inputs, outputs) -> tuple[torch.Tensor, ...]:
        if not isinstance(outputs, (tuple, list)) or len(outputs) != len(self.outputs):
            got = len(outputs) if isinstance(outputs, (tuple, list)) else type(outputs).__name__
            raise BridgeError(f"{self.name}: forward must return {len(self.outputs)} tensors "
                              f"({', '.join(self.outputs)}), got {got}")
        device, dtype = inputs[0].device, self.float_dtype(inputs)
        shapes = self.output_shapes(inputs) if self.output_shapes is not None else [None] * len(outputs)
        for out, name, diff, shape in zip(outputs, self.outputs, self.differentiable, shapes):
            if not isinstance(out, torch.Tensor):
                raise BridgeError(f"{self.name}: output '{name}' is a {type(out).__name__}, not a tensor")
            if out.device != device:
                raise BridgeError(f"{self.name}: output '{name}' is on {out.device}, the inputs on {device}")
            if diff and dtype is not None and out.dtype != dtype:
                raise BridgeError(f"{self.name}: output '{name}' is {out.dtype}, the inputs {dtype}")
            if shape is not None and tuple(out.shape) != tuple(shape):
                raise BridgeError(f"{self.name}: output '{name}' has shape {tuple(out.shape)}, "
                                  f"expected {tuple(shape)}")
        return tuple(outputs)

    def checked_grads(self, inputs: Sequence[tuple], grads, cotangents, batch: int | None = None) -> tuple:
        """``inputs``: ``(shape, dtype, device)`` of each input; ``batch``: the number of probes, if batched."""
        if not isinstance(grads, (tuple, list)) or len(grads) != len(inputs):
            got = len(grads) if isinstance(grads, (tuple, list)) else type(grads).__name__
            raise BridgeError(f"{self.name}: vjp must return {len(inputs)} input gradients, got {got}")
        lead = () if batch is None else (batch,)
        for i, (g, (shape, dtype, device)) in enumerate(zip(grads, inputs)):
            if g is None:
                continue
            expected = (*lead, *shape)
            if not isinstance(g, torch.Tensor) or tuple(g.shape) != expected or g.dtype != dtype \
                    or g.device != device:
                got = (f"{tuple(g.shape)} {g.dtype} on {g.device}" if isinstance(g, torch.Tensor)
                       else type(g).__name__)
                raise BridgeError(f"{self.name}: gradient of input {i} is {got}, expected {expected} "
                                  f"{dtype} on {device}")
            if self.check_finite and g.is_floating_point() and not bool(torch.isfinite(g).all()):
                if all(c is None or bool(torch.isfinite(c).all()) for c in cotangents):
                    raise BridgeError(f"{self.name}: the gradient of input {i} is not finite for finite "
                                      f"cotangents of ({', '.join(self.outputs)})")
        return tuple(grads)


def _legacy_vmap_level() -> int:
    """The nesting level of torch's legacy vmap (the ``is_grads_batched`` backend) we are inside."""
    level = torch._C._vmapmode_increment_nesting()
    torch._C._vmapmode_decrement_nesting()
    return level - 1


def _is_batched(t: torch.Tensor | None) -> bool:
    return t is not None and torch._C._functorch.is_legacy_batchedtensor(t)


class _ExternalStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, function: ExternalFunction, *inputs: torch.Tensor):
        inputs = function.prepare(inputs)
        if function.forward_with_residuals is None:
            outputs, saved = _called(function, "forward", function.forward, inputs), None
            ctx.save_for_backward(*inputs)
        else:
            outputs, saved = _called(function, "forward_with_residuals", function.forward_with_residuals, inputs)
        ctx.input_meta = [(t.shape, t.dtype, t.device) for t in inputs]
        outputs = function.checked_outputs(inputs, outputs)
        ctx.function, ctx.residuals = function, saved
        ctx.set_materialize_grads(function.materialize_cotangents)
        ctx.mark_non_differentiable(*(o for o, d in zip(outputs, function.differentiable) if not d))
        return outputs

    @staticmethod
    def backward(ctx, *cotangents: torch.Tensor | None):
        function: ExternalFunction = ctx.function
        if torch.is_grad_enabled():
            raise BridgeError(f"{function.name}: no second derivatives through a bridged function "
                              "(backward was asked to build a graph, create_graph=True); they would be zeros")
        saved = ctx.saved_tensors if ctx.residuals is None else ctx.residuals
        cotangents = tuple(c if d else None for c, d in zip(cotangents, function.differentiable))  # flags: None
        if any(_is_batched(c) for c in cotangents):
            return (None, *_batched_backward(function, saved, ctx.input_meta, cotangents))
        grads = function.checked_grads(ctx.input_meta, _called(function, "vjp (backward)", function.vjp, saved,
                                                               cotangents), cotangents)
        return (None, *grads)


def _batched_backward(function: ExternalFunction, saved, inputs, cotangents) -> tuple:
    """Backward under ``is_grads_batched``: unwrap the ``P`` cotangents, one ``batched_vjp`` call (or ``P``
    ``vjp`` calls), wrap the gradients back into torch's batched tensors."""
    level = _legacy_vmap_level()
    sizes = {torch._remove_batch_dim(c, level, 1, 0).shape[0] for c in cotangents if _is_batched(c)}
    (probes,) = sizes
    physical = tuple(None if c is None else torch._remove_batch_dim(c, level, probes, 0).contiguous()
                     for c in cotangents)
    if function.batched_vjp is not None:
        grads = function.checked_grads(inputs, _called(function, "batched_vjp (backward)", function.batched_vjp,
                                                       saved, physical), physical, batch=probes)
    else:
        rows = [function.checked_grads(inputs, _called(function, "vjp (backward)", function.vjp, saved,
                                                       tuple(None if c is None else c[p] for c in physical)),
                                       physical)
                for p in range(probes)]
        grads = tuple(None if any(r[i] is None for r in rows) else torch.stack([r[i] for r in rows])
                      for i in range(len(inputs)))
    return tuple(None if g is None else torch._add_batch_dim(g, 0, level) for g in grads)
