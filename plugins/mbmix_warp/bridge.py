"""The torch ↔ warp bridge: one env step (``substeps`` kernel launches) as an ``mb.ExternalFunction``.

Built on the core's public bridge (:class:`mbmix_fw.ExternalFunction`: checks, no second derivatives,
batched probes). What is specific to warp lives here: a :class:`_Workspace` per ``(num_envs, dtype,
device)`` holding

- the trajectory of one step, ``xs, vs [S + 1, N, P, 3]`` (``S`` substeps), and the adjoints of every
  substep state, ``adj_xs, adj_vs [S + 1, N, P, 3]``, plus the grippers' adjoint accumulators;
- ``S`` recorded forward launches (``wp.launch(record_cmd=True)``: each substep's pointers are fixed, so
  replaying skips warp's argument packing) and ``S`` recorded adjoint launches; the sixteen constants
  travel in one ``wp.struct`` (:data:`mbmix_warp.kernels.PARAMS`);
- a graph of the forward loop and one of the adjoint loop, captured on first use (``wp.ScopedCapture``:
  a CUDA graph on a GPU, so a step costs a few launches whatever ``S``; warp's CPU graph replay on the
  CPU, which skips Python per launch); a capture that fails warns once and falls back to the recorded
  launches. ``ClothSimulator(use_graphs=False)`` launches one by one (tests compare the two).

Forward copies the step's inputs into ``xs[0], vs[0]`` and the grippers' buffers, runs the ``S``
substeps and returns copies of ``xs[S], vs[S]``. Backward (recompute) does the same, then sets
``adj_xs[S], adj_vs[S]`` to the incoming cotangents, zeroes the rest of the adjoint trajectory with one
fill (warp's adjoint kernels accumulate), and runs the ``S`` adjoint launches from the last substep to
the first: ``adj_xs[0], adj_vs[0]`` and the grippers' accumulators are the input gradients. No tape, no
allocation or memset per substep. ``P`` probes (``batched_vjp``) recompute once and run the adjoint loop
``P`` times.

Memory: the autograd graph retains per step only its inputs, whatever ``substeps`` is; the workspace
holds ``4·(S + 1)·N·P·3`` floats per ``(num_envs, dtype, device)`` for the life of the simulator
(``benchmarks/cloth_sim.py`` measures both). The workspace is shared by every call of that key:
calls must be ordered on one stream (torch's current stream, on which the bridge launches: warp's
stream object for it is cached per CUDA stream, entered without a synchronisation).

Determinism: the forward gathers (no atomics); the adjoint of a substep scatters into neighbours with
atomic adds, so float32 gradients on a GPU can differ in the last bits between runs.

Tensors cross without copies where possible: ``wp.from_torch`` wraps torch storage (CPU or CUDA). The
kernel runs on the device of the input tensors; the float type follows their dtype (``float32`` or
``float64``).
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings

import torch
import warp as wp

import mbmix_fw as mb

from . import kernels
from .physics import KERNEL_CONSTANTS, ClothPhysics

_VEC = {torch.float32: (wp.vec3f, wp.float32), torch.float64: (wp.vec3d, wp.float64)}
_NAME = {torch.float32: "float32", torch.float64: "float64"}


def kernel_params(physics: ClothPhysics, dtype: torch.dtype):
    """``physics`` as the kernel's ``wp.struct`` of ``dtype``'s float type (the same field names)."""
    params = kernels.PARAMS[_NAME[dtype]]()
    params.grid_size = physics.grid_size
    for name in KERNEL_CONSTANTS:
        setattr(params, name, getattr(physics, name))
    return params


class ClothSimulator:
    """Steps batches of cloths: ``step(x, v, grip_pos, grip_vel) -> (x', v')``, differentiable.

    ``x, v [N, P, 3]``, ``grip_pos, grip_vel [N, G, 3]`` (one step of ``substeps`` substeps; the grippers
    move at constant velocity during it). ``pinned_by[p]`` is the gripper holding particle ``p`` or -1.
    ``use_graphs``: replay the substep loops as captured warp graphs (see the module docstring).
    """

    def __init__(self, physics: ClothPhysics, pinned_by: list[int], device: torch.device | str | None = None, *,
                 use_graphs: bool = True):
        init_warp(device)
        self.physics = physics
        self.pinned_by = list(pinned_by)
        self.use_graphs = use_graphs
        self._pins: dict[str, wp.array] = {}
        self._workspaces: dict[tuple, _Workspace] = {}
        self.function = mb.ExternalFunction(
            self._forward, self._vjp, batched_vjp=self._batched_vjp, name="cloth step", outputs=("x", "v"),
            output_shapes=lambda inputs: (inputs[0].shape, inputs[1].shape),
            check_finite=False)  # the trainer skips and counts non-finite updates

    def step(self, x: torch.Tensor, v: torch.Tensor, grip_pos: torch.Tensor, grip_vel: torch.Tensor):
        return self.function(x, v, grip_pos, grip_vel)

    def pins_on(self, device) -> wp.array:
        key = str(device)
        if key not in self._pins:
            self._pins[key] = wp.array(self.pinned_by, dtype=wp.int32, device=device)
        return self._pins[key]

    def workspace(self, x: torch.Tensor, grip: torch.Tensor) -> "_Workspace":
        key = (x.shape[0], grip.shape[1], x.dtype, x.device)
        if key not in self._workspaces:
            self._workspaces[key] = _Workspace(self, *key)
        return self._workspaces[key]

    # ---- the ExternalFunction callables (inputs: x, v, grip_pos, grip_vel, detached and contiguous)
    def _forward(self, inputs):
        ws = self.workspace(inputs[0], inputs[2])
        with _torch_stream(ws.device):
            ws.load(inputs)
            ws.run("forward")
        return ws.xs[-1].clone(), ws.vs[-1].clone()

    def _vjp(self, inputs, cotangents):
        return tuple(g[0] for g in self._batched_vjp(inputs, tuple(c[None] for c in cotangents)))

    def _batched_vjp(self, inputs, cotangents):
        """One recompute, then the adjoint loop once per probe; cotangents ``[P, N, P_particles, 3]``."""
        ws = self.workspace(inputs[0], inputs[2])
        probes = cotangents[0].shape[0]
        grads = [torch.empty((probes, *t.shape), dtype=t.dtype, device=t.device) for t in inputs]
        with _torch_stream(ws.device):
            ws.load(inputs)
            ws.run("forward")
            for p in range(probes):
                ws.adj_xs[:-1].zero_()
                ws.adj_vs[:-1].zero_()
                ws.adj_grip_pos.zero_()
                ws.adj_grip_vel.zero_()
                ws.adj_xs[-1].copy_(cotangents[0][p])
                ws.adj_vs[-1].copy_(cotangents[1][p])
                ws.run("adjoint")
                for g, source in zip(grads, (ws.adj_xs[0], ws.adj_vs[0], ws.adj_grip_pos, ws.adj_grip_vel)):
                    g[p].copy_(source)
        return tuple(grads)


class _Workspace:
    """Buffers, recorded launches and (CUDA) graphs of one ``(num_envs, grippers, dtype, device)``."""

    capture_warned = False

    def __init__(self, sim: ClothSimulator, n: int, grippers: int, dtype: torch.dtype, device: torch.device):
        S, P = sim.physics.substeps, len(sim.pinned_by)
        self.device, self.use_graphs = device, sim.use_graphs
        vec, scalar = _VEC[dtype]
        like = dict(dtype=dtype, device=device)
        self.xs, self.vs = torch.empty(S + 1, n, P, 3, **like), torch.empty(S + 1, n, P, 3, **like)
        self.adj_xs, self.adj_vs = torch.zeros(S + 1, n, P, 3, **like), torch.zeros(S + 1, n, P, 3, **like)
        self.grip_pos, self.grip_vel = torch.empty(n, grippers, 3, **like), torch.empty(n, grippers, 3, **like)
        self.adj_grip_pos, self.adj_grip_vel = torch.zeros_like(self.grip_pos), torch.zeros_like(self.grip_vel)
        wrap = lambda t: wp.from_torch(t, dtype=vec, requires_grad=False)  # noqa: E731
        xs, vs, adj_xs, adj_vs = ([wrap(t[k]) for k in range(S + 1)] for t in (self.xs, self.vs, self.adj_xs,
                                                                               self.adj_vs))
        grip = [wrap(t) for t in (self.grip_pos, self.grip_vel, self.adj_grip_pos, self.adj_grip_vel)]
        wp_device = wp.device_from_torch(device)
        kernel, pins, params = kernels.SUBSTEP[_NAME[dtype]], sim.pins_on(wp_device), kernel_params(sim.physics, dtype)
        self.params = params  # the recorded launches point into it: keep it alive
        zero_params = kernels.PARAMS[_NAME[dtype]]()

        def arguments(k):
            return [xs[k], vs[k], grip[0], grip[1], pins, params, scalar((k + 1) * sim.physics.substep_dt)]

        self.launches = {
            "forward": [wp.launch(kernel, dim=(n, P), device=wp_device, inputs=arguments(k),
                                  outputs=[xs[k + 1], vs[k + 1]], record_cmd=True) for k in range(S)],
            "adjoint": [wp.launch(kernel, dim=(n, P), device=wp_device, inputs=arguments(k),
                                  outputs=[xs[k + 1], vs[k + 1]],
                                  adj_inputs=[adj_xs[k], adj_vs[k], grip[2], grip[3], None, zero_params,
                                              scalar(0.0)],
                                  adj_outputs=[adj_xs[k + 1], adj_vs[k + 1]], adjoint=True, record_cmd=True)
                        for k in reversed(range(S))],
        }
        self.graphs: dict[str, object] = {}
        self._views = (xs, vs, adj_xs, adj_vs, grip)  # the warp views the launches point to

    def load(self, inputs) -> None:
        """Copy the step's inputs ``(x, v, grip_pos, grip_vel)`` into the fixed buffers the launches read."""
        for target, source in zip((self.xs[0], self.vs[0], self.grip_pos, self.grip_vel), inputs):
            target.copy_(source)

    def run(self, which: str) -> None:
        """The ``which`` loop ("forward" or "adjoint") on the current stream: its CUDA graph if captured."""
        graph = self.graphs.get(which)
        if graph is None and self.use_graphs:
            graph = self.graphs[which] = self._capture(which)
        if graph:
            wp.capture_launch(graph, stream=_warp_stream(self.device))
            return
        for launch in self.launches[which]:
            launch.launch()

    def _capture(self, which: str):
        """A graph of the loop; on CUDA captured on a stream of warp's own (torch's default stream cannot
        capture) and replayed on torch's. ``False`` (launch one by one) with one warning if capture fails."""
        try:
            device = wp.device_from_torch(self.device)
            stream = wp.Stream(device) if device.is_cuda else None
            with wp.ScopedCapture(device=device, stream=stream, force_module_load=False) as capture:
                for launch in self.launches[which]:
                    launch.launch(stream=stream)
            return capture.graph
        except Exception as error:  # noqa: BLE001 - any capture failure falls back to plain launches
            if not _Workspace.capture_warned:
                _Workspace.capture_warned = True
                warnings.warn(f"cloth step: graph capture failed ({error}); launching kernels one by one",
                              RuntimeWarning, stacklevel=4)
            return False


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


_STREAMS: dict[int, "wp.Stream"] = {}


def _warp_stream(device: torch.device):
    """Warp's object for torch's current CUDA stream, made once per stream (``None`` on the CPU)."""
    handle = mb.current_stream_handle(device)
    if handle is None:
        return None
    if handle not in _STREAMS:
        _STREAMS[handle] = wp.Stream(wp.device_from_torch(device), cuda_stream=handle)
    return _STREAMS[handle]


def _torch_stream(device: torch.device):
    """Launch on torch's current CUDA stream (no synchronisation on entry: every launch of ours goes there);
    nothing on the CPU."""
    stream = _warp_stream(device)
    return contextlib.nullcontext() if stream is None else wp.ScopedStream(stream, sync_enter=False)
