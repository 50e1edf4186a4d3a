"""The torch ↔ warp bridge: one env step (``substeps`` kernel launches) as a ``torch.autograd.Function``.

Forward runs the substeps without a tape, ping-ponging between two buffers, and saves only the step's
inputs (positions, velocities, gripper positions and velocities). Backward recomputes the substeps on a
:class:`warp.Tape` and replays it with the incoming gradient. So the memory an autograd graph *retains*
per step is the step's inputs, whatever ``substeps`` is; the *transient* memory of one backward call is
``substeps + 1`` copies of positions and velocities and their gradients
(``4·(substeps + 1)·N·P·3`` floats), freed when it returns (``benchmarks/cloth_sim.py`` measures both).

Tensors cross without copies: ``wp.from_torch`` wraps torch storage (CPU or CUDA) as warp arrays, and
the gradients warp accumulates land directly in torch tensors. The kernel runs on the device of the
input tensors; the float type follows their dtype (``float32`` or ``float64``).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from dataclasses import dataclass

import torch
import warp as wp
from torch.autograd.function import once_differentiable

from . import kernels

_VEC = {torch.float32: (wp.vec3f, wp.float32), torch.float64: (wp.vec3d, wp.float64)}
_NAME = {torch.float32: "float32", torch.float64: "float64"}


@dataclass(frozen=True)
class ClothPhysics:
    """The physical constants of one cloth simulator (SI units); see :mod:`mbmix_warp.kernels`."""

    side: int
    spacing: float
    k_stretch: float
    k_shear: float
    k_bend: float
    spring_damping: float
    particle_mass: float
    gravity: float
    drag: float
    radius: float
    contact_width: float
    k_contact: float
    contact_damping: float
    friction: float
    friction_smoothing: float
    dt: float
    """Substep length (s)."""
    substeps: int


class ClothSimulator:
    """Steps batches of cloths: ``step(x, v, grip_pos, grip_vel) -> (x', v')``, differentiable.

    ``x, v [N, P, 3]``, ``grip_pos, grip_vel [N, G, 3]`` (one step of ``substeps`` substeps; the grippers
    move at constant velocity during it). ``pinned_by[p]`` is the gripper holding particle ``p`` or -1.
    """

    def __init__(self, physics: ClothPhysics, pinned_by: list[int], device: torch.device | str | None = None):
        init_warp(device)
        self.physics = physics
        self.pinned_by = list(pinned_by)
        self._pins: dict[str, wp.array] = {}

    def step(self, x: torch.Tensor, v: torch.Tensor, grip_pos: torch.Tensor, grip_vel: torch.Tensor):
        return _ClothStep.apply(self, x, v, grip_pos, grip_vel)

    # ---- kernel launches (shared by forward and the recomputation in backward)
    def pins_on(self, device) -> wp.array:
        key = str(device)
        if key not in self._pins:
            self._pins[key] = wp.array(self.pinned_by, dtype=wp.int32, device=device)
        return self._pins[key]

    def arguments(self, k: int, x, v, grip_pos, grip_vel, dtype: torch.dtype, device) -> list:
        """The kernel's inputs for substep ``k`` (``elapsed = (k + 1)·dt`` is the last one)."""
        c, scalar = self.physics, _VEC[dtype][1]
        constants = [scalar(value) for value in (
            c.spacing, c.k_stretch, c.k_shear, c.k_bend, c.spring_damping, c.particle_mass, c.gravity,
            c.drag, c.radius, c.contact_width, c.k_contact, c.contact_damping, c.friction,
            c.friction_smoothing, c.dt, (k + 1) * c.dt)]
        return [x, v, grip_pos, grip_vel, self.pins_on(device), c.side, *constants]

    def launch(self, k: int, x, v, grip_pos, grip_vel, x_out, v_out, dtype: torch.dtype, device) -> None:
        """One substep through ``wp.launch`` (recorded by an active :class:`warp.Tape`)."""
        wp.launch(kernels.SUBSTEP[_NAME[dtype]], dim=x.shape, device=device,
                  inputs=self.arguments(k, x, v, grip_pos, grip_vel, dtype, device), outputs=[x_out, v_out])


NO_CUDA_DRIVER = "Warp CUDA warning: Could not find or load the NVIDIA CUDA driver"
"""The line warp's native ``wp_init`` prints (C ``fprintf`` to stderr, not Python logging, so no warp setting
silences it) on every machine without an NVIDIA driver, whatever device the run uses."""


def init_warp(device: torch.device | str | None = None) -> None:
    """Initialise warp without its start-up banner (warnings and errors still print).

    For a run on the CPU (``device`` of type ``cpu``, or ``None``) warp's "no CUDA driver" line is dropped:
    a CPU run needs no GPU and the line would be the first thing every CPU user sees. A CUDA run keeps it
    (there it explains the failure that follows). Every other line warp prints meanwhile is passed on."""
    if wp.config.log_level < wp.LOG_WARNING:
        wp.config.log_level = wp.LOG_WARNING
    if torch.device(device or "cpu").type == "cuda":
        wp.init()
        return
    with _native_stderr_without(NO_CUDA_DRIVER):
        wp.init()


@contextlib.contextmanager
def _native_stderr_without(prefix: str):
    """Capture file descriptor 2 (what C code writes) in the block; re-emit it without lines starting
    with ``prefix``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith(prefix)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def _torch_stream(device: torch.device):
    """Launch on torch's current CUDA stream, so warp and torch work stay ordered; nothing on CPU."""
    if device.type == "cuda":
        return wp.ScopedStream(wp.stream_from_torch(torch.cuda.current_stream(device)))
    return contextlib.nullcontext()


def _wrap(t: torch.Tensor, vec) -> wp.array:
    return wp.from_torch(t, dtype=vec, requires_grad=False)


def _fresh(like: torch.Tensor, vec) -> wp.array:
    """A torch-allocated array with a zeroed gradient (torch's allocator, so torch's memory stats see it)."""
    return wp.from_torch(torch.empty_like(like), dtype=vec, requires_grad=True, grad=torch.zeros_like(like))


class _ClothStep(torch.autograd.Function):
    """One step (all substeps) of :class:`ClothSimulator`; backward recomputes on a :class:`warp.Tape`."""

    @staticmethod
    def forward(ctx, sim: ClothSimulator, x, v, grip_pos, grip_vel):
        x, v, grip_pos, grip_vel = (t.detach().contiguous() for t in (x, v, grip_pos, grip_vel))
        if x.dtype not in _VEC:
            raise TypeError(f"cloth simulation runs in float32 or float64, got {x.dtype}")
        vec = _VEC[x.dtype][0]
        device = wp.device_from_torch(x.device)
        ping = [(torch.empty_like(x), torch.empty_like(v)) for _ in range(min(sim.physics.substeps, 2))]
        wrapped = [(_wrap(a, vec), _wrap(b, vec)) for a, b in ping]
        current = (_wrap(x, vec), _wrap(v, vec))
        inputs = sim.arguments(0, *current, _wrap(grip_pos, vec), _wrap(grip_vel, vec), x.dtype, device)
        elapsed = len(inputs) - 1
        with _torch_stream(x.device):
            # a recorded command: replaying it with new pointers skips wp.launch's argument handling
            cmd = wp.launch(kernels.SUBSTEP[_NAME[x.dtype]], dim=x.shape[:2], device=device, inputs=inputs,
                            outputs=list(wrapped[0]), record_cmd=True)
            for k in range(sim.physics.substeps):
                out = wrapped[k % 2]
                for index, value in ((0, current[0]), (1, current[1]), (elapsed + 1, out[0]), (elapsed + 2, out[1])):
                    cmd.set_param_at_index(index, value)
                cmd.set_param_at_index(elapsed, _VEC[x.dtype][1]((k + 1) * sim.physics.dt))
                cmd.launch()
                current = out
        ctx.sim = sim
        ctx.save_for_backward(x, v, grip_pos, grip_vel)
        last = ping[(sim.physics.substeps - 1) % 2]
        return last

    @staticmethod
    @once_differentiable  # a second derivative through the tape is not implemented: raise, never return 0
    def backward(ctx, grad_x, grad_v):
        sim: ClothSimulator = ctx.sim
        x, v, grip_pos, grip_vel = ctx.saved_tensors
        vec = _VEC[x.dtype][0]
        device = wp.device_from_torch(x.device)
        grads = [torch.zeros_like(t) for t in (x, v, grip_pos, grip_vel)]
        inputs = [wp.from_torch(t, dtype=vec, requires_grad=True, grad=g)
                  for t, g in zip((x, v, grip_pos, grip_vel), grads)]
        xs, vs = [inputs[0]], [inputs[1]]
        tape = wp.Tape()
        with _torch_stream(x.device):
            with tape:
                for k in range(sim.physics.substeps):
                    xs.append(_fresh(x, vec))
                    vs.append(_fresh(v, vec))
                    sim.launch(k, xs[k], vs[k], inputs[2], inputs[3], xs[k + 1], vs[k + 1], x.dtype, device)
            # copies of the incoming gradients: warp zeroes an output's gradient once it has read it
            for arr, g in ((xs[-1], grad_x), (vs[-1], grad_v)):
                if g is not None:
                    wp.copy(arr.grad, wp.from_torch(g.detach().contiguous(), dtype=vec))
            tape.backward()
        # (no tape.reset(): it would zero the gradients, which live in torch's tensors `grads`)
        return (None, *grads)
