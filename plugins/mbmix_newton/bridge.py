"""The torch ↔ Newton bridge: one env step (``substeps`` Featherstone substeps) as an ``mb.ExternalFunction``.

Why Featherstone: of Newton 1.8's solvers only ``SolverFeatherstone`` and ``SolverSemiImplicit`` differentiate
through ``wp.Tape``; SemiImplicit went NaN on the ant within 200 substeps with its default joint attachment
stiffness, and Featherstone integrates in generalized coordinates ``(joint_q, joint_qd)`` -- exactly the flat
state an ``mb.DiffEnv`` wants (DiffRL's tasks were generalized-coordinate too).

One :class:`NewtonSimulator` serves every batch size: a :class:`_Workspace` per ``num_envs`` holds **one Newton
model with all the envs of that batch** (``ModelBuilder.replicate``: one world per env, so envs never collide
with each other), ``substeps + 1`` states, one ``Contacts`` buffer (contacts are detected once per env step: :meth:`_Workspace.run`)
and the solver. Its torch views of
``joint_q``, ``joint_qd`` and ``Control.joint_f`` are ``wp.to_torch`` views of warp's own memory (no copy).

Forward: copy the step's inputs ``(q [N, nq], qd [N, nd], joint_f [N, nd])`` into state 0 and the control,
then forward kinematics and ``collide`` into the step's ``Contacts`` (robots with contacts) and per substep
``solver.step``; return copies of the last state's ``(q, qd)``. No tape when nothing is differentiated.

Backward, by default (``keep_tapes``): a differentiated step runs on a workspace leased from a pool
(:class:`_TapePool`: its own states, contacts, control and solver, the model shared), recorded on that
workspace's ``wp.Tape``, which the autograd graph keeps as the step's residual; the backward writes the
cotangents into the last state's ``.grad``, replays ``tape.backward()`` (the forward having undone an in-place
overwrite of Newton's that the adjoint would otherwise read: :meth:`_Workspace.restore_external_wrenches`),
reads the gradients of state 0's ``joint_q``/``joint_qd`` and of ``joint_f``, and zeroes the tape's gradients;
the workspace returns to the pool when the graph lets go of it. ``keep_tapes=False``: recompute (the cloth's
pattern and Rewarped's): the same forward recorded on a fresh tape in backward, one workspace per batch size,
the autograd graph keeping only each step's inputs (a sixth more CPU time on the ant, less memory).

**The mass-matrix pitfall** (``newton.md``): Featherstone keeps the joint-space mass matrix and its Cholesky
factor in buffers it owns and overwrites on each update; a tape that spans two updates back-propagates every
substep with the *last* factor (measured: tape 0.00949 vs central differences 0.00350 on the ant over 64
substeps with interval 1). The solver is therefore built with ``update_mass_matrix_interval = substeps`` and every
call runs exactly ``substeps`` steps, so each taped step computes the factor once, at its first substep, and the
backward that follows at once uses that factor. :meth:`_Workspace.run` refuses a solver whose interval is
anything else (an error, not a silent wrong gradient; tested).

**Graphs**: the forward, the taped forward, its backward (or the taped recompute with its backward), and the
gradient zeroing are each captured once per workspace as a warp graph and replayed (bit-identical to launching, tested): on a CPU the step was mostly
Python packing kernel arguments (see :meth:`_Workspace.forward`). CPU only for now: on CUDA the step launches
one by one, because ordering the captures against torch's stream (what the cloth bridge does) is not done and
no GPU was at hand to test it.

Float32 only: Newton's ``finalize`` takes no dtype. Envs cast to float32 before the bridge and back after.
"""
from __future__ import annotations

import contextlib
import warnings
import weakref
from typing import Callable

import torch
import warp as wp

import mbmix_fw as mb


class NewtonSimulator:
    """Steps batches of one articulated robot: ``step(q, qd, joint_f) -> (q', qd')``, differentiable.

    ``build_env(builder)`` adds one env (bodies, joints, shapes) to a ``newton.ModelBuilder``; ``ground``
    adds a ground plane shared by all worlds; ``contacts``: run the collision pipeline every substep (off
    for robots that touch nothing, e.g. the cart-pole). ``dt`` is one env step (s), split in ``substeps``.
    ``configure_builder(builder)`` runs on each new builder first; ``ground_config`` is the ground plane's
    ``ShapeConfig`` (its contact material).
    """

    def __init__(self, build_env: Callable, *, dt: float, substeps: int, contacts: bool, ground: bool = False,
                 device: torch.device | str | None = None, gravity: float = -9.81,
                 configure_builder: Callable | None = None, mass_matrix_interval: int | None = None,
                 ground_config=None, use_graphs: bool = True, contacts_per_env: int | None = None,
                 collide_every_substep: bool = False, keep_tapes: bool = True):
        init_warp()
        self.build_env, self.dt, self.substeps = build_env, dt, substeps
        self.use_contacts, self.ground, self.gravity = contacts, ground, gravity
        self.configure_builder, self.ground_config = configure_builder, ground_config
        self.mass_matrix_interval = substeps if mass_matrix_interval is None else mass_matrix_interval
        """Featherstone's update interval; ``substeps`` (the default) is the only correct value for a taped
        step (module docstring). Tests set another value to show that the FD check catches it."""
        self.device = torch.device(device or "cpu")
        self.use_graphs = use_graphs
        """Replay the step's launches as captured warp graphs (CPU only; see :meth:`_Workspace.forward`)."""
        self.contacts_per_env = contacts_per_env
        """The contact buffer's size per env (None: Newton's bound from the shape pairs, 65 per ant). Every
        contact kernel runs over the whole buffer, so a robot that knows its bound says it (the ant: 32)."""
        self.collide_every_substep = collide_every_substep
        """Detect contacts before every substep instead of once per env step (see :meth:`_Workspace.run`):
        the reference the tests compare the once-per-step detection against."""
        self._workspaces: dict[int, _Workspace] = {}
        self.keep_tapes = keep_tapes
        """Record each differentiated step on a tape of its own and keep it for the backward (``mb.ExternalFunction``'s
        residuals) instead of recomputing the step there: one forward per step instead of two (the recompute
        was a sixth of the ant's step, measured), at the memory of one set of buffers per step alive in the
        autograd graph (:class:`_TapePool`). False: the recompute, one set of buffers per batch size."""
        self._tapes: dict[int, _TapePool] = {}
        probe = self.workspace(1)
        self.nq, self.nd = probe.nq, probe.nd
        self.function = mb.ExternalFunction(
            self._forward, self._vjp, name="newton step", outputs=("joint_q", "joint_qd"),
            forward_with_residuals=self._forward_taped if keep_tapes else None,
            output_shapes=lambda inputs: (inputs[0].shape, inputs[1].shape), dtypes=(torch.float32,),
            check_finite=False)  # the trainer skips and counts non-finite updates

    def workspace(self, n: int) -> "_Workspace":
        if n not in self._workspaces:
            self._workspaces[n] = _Workspace(self, n)
        return self._workspaces[n]

    def step(self, q: torch.Tensor, qd: torch.Tensor, joint_f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One env step of float32 ``q [N, nq]``, ``qd [N, nd]`` under generalized forces ``joint_f [N, nd]``."""
        return self.function(q, qd, joint_f)

    def initial_q(self) -> torch.Tensor:
        """``[1, nq]`` the model's own initial joint coordinates (the builder's, e.g. an asset's pose)."""
        return wp.to_torch(self.workspace(1).model.joint_q, requires_grad=False).clone().view(1, self.nq)

    def body_poses(self, q: torch.Tensor) -> torch.Tensor:
        """``[N, B, 7]`` world poses (position, quaternion xyzw) of each env's bodies at ``q`` (no gradient):
        forward kinematics, for tests and drawings."""
        ws = self.workspace(q.shape[0])
        ws.q[0].copy_(q.detach().float())
        import newton
        newton.eval_fk(ws.model, ws.states[0].joint_q, ws.states[0].joint_qd, ws.states[0])
        return wp.to_torch(ws.states[0].body_q).clone().reshape(q.shape[0], -1, 7)

    @torch.no_grad()
    def contact_stiffness(self, q: torch.Tensor, qd: torch.Tensor, joint_f: torch.Tensor) -> torch.Tensor:
        """``[N]`` AHAC's contact signal of one env step from ``(q, qd, joint_f)`` (recomputed, no gradient):
        ``‖F / max(|a|, 1 m/s²)‖`` over every body and world axis, in kg
        (:meth:`mbmix_fw.DiffEnv.contact_stiffness`).

        ``F``: each body's ground-contact force (world frame, N), the mean over the step's substeps of what
        Featherstone's contact kernel accumulated into the body's external wrench (read back through the same
        inversion as :meth:`_Workspace.restore_external_wrenches`); a body off the ground has 0. ``a``: the
        body's centre-of-mass acceleration over the step, ``(v' − v)/dt`` from forward kinematics of the step's
        start and end. Only bodies count (no joint-limit forces): the signal is the ground's.
        A robot resting on its feet scores about its weight over the 1 m/s² floor (tested)."""
        import newton
        if not self.use_contacts:
            raise mb.BridgeError("newton step: contact_stiffness needs a simulator built with contacts=True")
        n = q.shape[0]
        ws = self.workspace(n)
        ws.load((q, qd, joint_f))
        ws.forward()
        force = torch.zeros(n, ws.model.body_count // n, 3, device=q.device)
        for state in ws.states[1:]:
            force -= wp.to_torch(state.body_f_ext, requires_grad=False).view(n, -1, 6)[..., :3]
        force /= ws.substeps
        velocity = []
        for state in (ws.states[0], ws.states[-1]):
            newton.eval_fk(ws.model, state.joint_q, state.joint_qd, state)
            velocity.append(wp.to_torch(state.body_qd, requires_grad=False).view(n, -1, 6)[..., :3].clone())
        accel = (velocity[1] - velocity[0]) / self.dt
        return (force / accel.abs().clamp_min(1.0)).flatten(1).norm(dim=1)

    # ---- the ExternalFunction callables
    @torch.no_grad()
    def _forward(self, inputs):
        ws = self.workspace(inputs[0].shape[0])
        ws.load(inputs)
        ws.forward()
        return ws.q[-1].clone(), ws.qd[-1].clone()

    @torch.no_grad()
    def _forward_taped(self, inputs):
        """The step recorded on the tape of a workspace leased from the pool; the lease is the residual."""
        n = inputs[0].shape[0]
        if n not in self._tapes:
            self._tapes[n] = _TapePool(self, self.workspace(n))
        lease = self._tapes[n].lease()
        ws = lease.workspace
        ws.load(inputs)
        ws.forward_taped()
        return (ws.q[-1].clone(), ws.qd[-1].clone()), lease

    @torch.no_grad()
    def _vjp(self, saved, cotangents):
        if isinstance(saved, _Lease):  # the step's own tape, kept from its forward
            return saved.workspace.backward_taped(cotangents)
        ws = self.workspace(saved[0].shape[0])
        ws.load(saved)
        return ws.adjoint(cotangents)


class _Lease:
    """A taped workspace lent to one differentiated step; back in its pool when the autograd graph lets go of
    it (``weakref.finalize``: the graph holds the lease as the step's residual)."""

    def __init__(self, pool: "_TapePool", workspace: "_Workspace"):
        self.workspace = workspace
        weakref.finalize(self, pool.free.append, workspace)


class _TapePool:
    """Taped workspaces of one batch size: each its own states, contacts, control, solver (so its own mass-matrix
    factor: a later step must not overwrite the one an earlier step's backward reads) and tape, all sharing
    one Newton model. Grows to the number of steps alive at once in autograd graphs (a window's ``H``)."""

    def __init__(self, sim: NewtonSimulator, shared: "_Workspace"):
        self.sim, self.shared = sim, shared
        self.free: list[_Workspace] = []
        self.size = 0

    def lease(self) -> _Lease:
        if not self.free:
            self.free.append(_Workspace(self.sim, self.shared.n, model_of=self.shared))
            self.size += 1
        return _Lease(self, self.free.pop())


class _Workspace:
    """The Newton model of ``n`` envs, its states, contacts, control, solver and torch views of them."""

    capture_warned = False

    def __init__(self, sim: NewtonSimulator, n: int, model_of: "_Workspace | None" = None):
        """``model_of``: share that workspace's Newton model and collision pipeline (a taped workspace of
        :class:`_TapePool`); the buffers below are this workspace's own."""
        import newton

        device = wp.device_from_torch(sim.device)
        if model_of is None:
            one = newton.ModelBuilder(gravity=(0.0, 0.0, sim.gravity))
            if sim.configure_builder is not None:
                sim.configure_builder(one)
            sim.build_env(one)
            scene = newton.ModelBuilder(gravity=(0.0, 0.0, sim.gravity))
            if sim.configure_builder is not None:
                sim.configure_builder(scene)
            scene.replicate(one, n)
            if sim.ground:
                scene.add_ground_plane(cfg=sim.ground_config)
            model = scene.finalize(device=device, requires_grad=True)
        else:
            model = model_of.model
        self.model = model
        self.n, self.substeps, self.dt = n, sim.substeps, sim.dt / sim.substeps
        self.nq, self.nd = model.joint_coord_count // n, model.joint_dof_count // n
        self.solver = solver = newton.solvers.SolverFeatherstone(model, update_mass_matrix_interval=sim.mass_matrix_interval,
                                                        use_tile_gemm=True, fuse_cholesky=False)
        """``use_tile_gemm``: the joint-space mass matrix ``H = Jᵀ M J`` summed over 6×6 body blocks (Newton's tile
        kernel) instead of two dense batched GEMMs over the whole block-diagonal ``M``: on the ant at 64 envs
        the dense GEMMs' forward and adjoint were the largest kernels of a step (measured, RESULTS.md).
        ``fuse_cholesky=False``: the factor is computed by the dense Cholesky kernel, whose adjoint the tape
        replays (the fused tile Cholesky's adjoint is not what the FD tests checked)."""
        self.drop_constant_gradients(solver)
        S = sim.substeps
        self.states = [model.state(requires_grad=True) for _ in range(S + 1)]
        """``states[0]``: the step's input; substep ``k`` steps ``states[k]`` into ``states[k + 1]``."""
        self.collide_every_substep = sim.collide_every_substep
        detections = S if sim.collide_every_substep else 1
        self.poses = [model.state(requires_grad=True) for _ in range(detections)] if sim.use_contacts else []
        """Where the collision pipeline reads body poses: forward kinematics of the step's (or substep's) input
        into a state of its own, off the tape (see :meth:`run`)."""
        self.control = model.control(requires_grad=True)
        limit = {} if sim.contacts_per_env is None else {"rigid_contact_max": sim.contacts_per_env * n}
        if model_of is not None:
            self.pipeline = model_of.pipeline
        else:
            self.pipeline = newton.CollisionPipeline(model, requires_grad=True, **limit) if sim.use_contacts else None
        self.contacts = [self.pipeline.contacts() for _ in range(detections)] if self.pipeline else [None]
        view = lambda a, width: wp.to_torch(a, requires_grad=False).view(n, width)  # noqa: E731 - zero-copy views of warp memory
        self.q = [view(s.joint_q, self.nq) for s in self.states]
        self.qd = [view(s.joint_qd, self.nd) for s in self.states]
        self.q_grad = [view(s.joint_q.grad, self.nq) for s in self.states]
        self.qd_grad = [view(s.joint_qd.grad, self.nd) for s in self.states]
        self.f = view(self.control.joint_f, self.nd)
        self.f_grad = view(self.control.joint_f.grad, self.nd)
        self._eval_fk = newton.eval_fk
        self.use_graphs = sim.use_graphs and device.is_cpu  # CUDA: see the module docstring
        self.graphs: dict[str, object] = {}
        self.tape: wp.Tape | None = None

    def drop_constant_gradients(self, solver) -> None:
        """No gradient buffers on the model's arrays (masses, inertias, joint frames, materials...) nor on the
        solver's copies of them: gradients flow through ``joint_q``, ``joint_qd`` and ``joint_f`` only, and
        every adjoint kernel otherwise accumulates into a gradient of each constant it reads (about 5 % of the
        ant's backward, measured; gradients bit-identical). The model is still finalised with
        ``requires_grad=True``: Featherstone sizes its mass-matrix buffers (``M``, ``J``, ``H``, ``L``) with
        gradients from that flag, and the tape needs them."""
        for value in vars(self.model).values():
            if isinstance(value, wp.array) and value.requires_grad:
                value.requires_grad = False
        for name in ("body_I_m", "body_X_com"):
            constant = getattr(solver, name, None)
            if isinstance(constant, wp.array) and constant.requires_grad:
                constant.requires_grad = False

    def forward(self) -> None:
        """The step without a tape: its captured graph when ``use_graphs`` (captured on first use).

        Why graphs: warp's CPU backend runs each kernel serially and Newton launches some 50 kernels per
        substep, so on a CPU a step is mostly Python packing launch arguments; a captured graph replays them
        without Python (cart-pole forward, 16 envs: 22 ms → 0.1 ms, measured). Newton's host-side decisions
        (the mass-matrix update on the step's first substep) are taken at capture time, which is what a step
        of exactly ``substeps`` substeps needs every time. A capture that fails warns once and falls back."""
        if self.use_graphs and self._replay("forward", self.run):
            return
        self.run()

    def adjoint(self, cotangents) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Recompute the step on a tape and back-propagate ``cotangents``; ``(dq, dqd, djoint_f)``.

        With graphs: one graph holds the recording, the wrench fix-up and ``tape.backward()``, another
        ``tape.zero()``; the tape is recorded once (its launches point into this workspace's fixed buffers)."""
        if self.use_graphs and self.tape is None:
            self.tape = wp.Tape()
        if self.use_graphs and self._replay("zero", lambda: self.tape.zero(), needs="backward"):
            self.q_grad[-1].copy_(cotangents[0])
            self.qd_grad[-1].copy_(cotangents[1])
            self._replay("backward", self._record_and_backward)
        else:
            tape = wp.Tape()
            self.run(tape)
            self.restore_external_wrenches()
            self.q_grad[-1].copy_(cotangents[0])
            self.qd_grad[-1].copy_(cotangents[1])
            tape.backward()
            grads = self.q_grad[0].clone(), self.qd_grad[0].clone(), self.f_grad.clone()
            tape.zero()
            for g in (*self.q_grad, *self.qd_grad, self.f_grad):
                g.zero_()
            return grads
        return self.q_grad[0].clone(), self.qd_grad[0].clone(), self.f_grad.clone()

    def forward_taped(self) -> None:
        """The step recorded on this workspace's own tape, kept for :meth:`backward_taped`, then the wrench
        fix-up (:meth:`restore_external_wrenches`: once per forward, however many backwards follow). With
        graphs, recorded once at capture and replayed: the tape's launches point into this workspace's fixed
        buffers."""
        if self.use_graphs and self._replay("taped_forward", self._record):
            return
        self._record()

    def _record(self) -> None:
        self.tape = wp.Tape()
        self.run(self.tape)
        self.restore_external_wrenches()

    def backward_taped(self, cotangents) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(dq, dqd, djoint_f)`` of the step :meth:`forward_taped` recorded, for ``cotangents``: seed the last
        state's gradient, replay the adjoint, read the inputs' gradients, zero every gradient the tape touched
        (so the next backward -- another probe, or the next step leasing this workspace -- starts clean).

        With graphs the zeroing graph is captured after the adjoint's: a tape learns which gradient arrays it
        touches while its backward is recorded."""
        self.q_grad[-1].copy_(cotangents[0])
        self.qd_grad[-1].copy_(cotangents[1])
        if not (self.use_graphs and self._replay("taped_backward", self.tape.backward)):
            self.tape.backward()
        grads = self.q_grad[0].clone(), self.qd_grad[0].clone(), self.f_grad.clone()
        if not (self.use_graphs and self._replay("taped_zero", self.tape.zero)):
            self.tape.zero()
        return grads

    def _record_and_backward(self) -> None:
        self.run(self.tape)
        self.restore_external_wrenches()
        self.tape.backward()

    def _replay(self, name: str, body, needs: str | None = None) -> bool:
        """Replay graph ``name`` (capturing ``body`` first if needed); False if graphs cannot be used.

        ``needs``: a graph that must exist first (the zeroing graph needs the recorded tape), captured now."""
        if needs is not None and needs not in self.graphs:
            self.graphs[needs] = self._capture(self._record_and_backward)
            if not self.graphs[needs]:
                return False
            # the first capture recorded the tape without running it: start from clean gradients
            self.tape.zero()
        if name not in self.graphs:
            self.graphs[name] = self._capture(body)
        graph = self.graphs[name]
        if not graph:
            return False
        wp.capture_launch(graph)
        return True

    def _capture(self, body):
        try:
            with wp.ScopedCapture(device=self.model.device, force_module_load=False) as capture:
                body()
            return capture.graph
        except Exception as error:  # noqa: BLE001 - any capture failure falls back to plain launches
            if not _Workspace.capture_warned:
                _Workspace.capture_warned = True
                warnings.warn(f"newton step: graph capture failed ({error}); launching kernels one by one",
                              RuntimeWarning, stacklevel=4)
            self.use_graphs = False
            return False

    def restore_external_wrenches(self) -> None:
        """Undo, before ``tape.backward()``, what Featherstone's ``eval_rigid_tau`` did in place to each substep's
        external-wrench buffer, so that its adjoint replays at the values its forward read.

        Why: Newton 1.8's ``eval_rigid_tau`` reads ``body_f_ext[child]`` (world-frame force and torque at the
        COM: the contact forces, here) and overwrites the same entry with the solve-frame wrench
        ``-(f, τ + x × f)``. Warp's adjoint re-reads the array, so without this it linearises at the
        overwritten value: the gradient w.r.t. ``joint_q`` of every step with an external wrench was wrong
        (measured: 41 % off central differences with a constant wrench in the air, ~10 % on the ant in ground
        contact; gradients w.r.t. actions and velocities were right). The buffers are the solver's per-state
        auxiliaries (``state_out.body_f_ext``, ``body_q_com``, ``body_solve_origin``), one per substep."""
        for state in self.states[1:]:
            wp.launch(_undo_solve_frame_wrench, dim=self.model.body_count,
                      inputs=[state.body_f_ext, state.body_q_com, state.body_solve_origin], device=self.model.device)

    @torch.no_grad()
    def load(self, inputs) -> None:
        q, qd, f = inputs
        self.q[0].copy_(q)
        self.qd[0].copy_(qd)
        self.f.copy_(f)

    def run(self, tape: "wp.Tape | None" = None) -> None:
        """``substeps`` substeps from state 0, recorded on ``tape`` when given; the step starts a mass-matrix
        update period exactly once.

        Collision detection runs off the tape, on poses of its own (forward kinematics of the step's input):
        its output for Featherstone (contact points in body frames at sphere and capsule-end centres, normals,
        margins) is treated as constant within the step, so gradients flow through the body poses the
        solver computes from ``joint_q``. **Once per env step** (ours), not per substep: Featherstone's
        contact force recomputes each candidate's penetration from the current body poses and acts only
        below zero, so a candidate list taken at the step's start gives the same forces as one taken before
        each substep unless a point closes more than Newton's contact gap (0.1 m) within one step (faster
        than 6 m/s at 60 Hz) -- measured on the ant: 600 steps of random and bang-bang actions, 8 envs, the
        two agree to 1.2e-5 (float32 summation order), and detecting once cut the forward's CPU time by a
        quarter at 64 ants, 7.5 → 5.6 ms (``collide_every_substep`` keeps the per-substep detection; tested
        against it). The humanoid's flat capsule feet make the detected contacts depend on the pose, which the
        tape does not see: measured, central differences with the detection frozen at the unperturbed pose
        match re-detected ones to 0.2 % or better (``benchmarks/newton_humanoid_gradient.py``), so detection
        stays off the tape there too. Newton's differentiable contact augmentation fills the deprecated
        ``rigid_contact_diff_*`` arrays, which Featherstone does not read: recording it changed no gradient
        (measured), so it is not paid for."""
        interval = self.solver.update_mass_matrix_interval
        if interval != self.substeps:
            raise mb.BridgeError(
                f"newton step: update_mass_matrix_interval = {interval} but one taped step has {self.substeps} "
                f"substeps; the tape would back-propagate through a mass-matrix factor it did not compute with")
        recording = tape if tape is not None else contextlib.nullcontext()
        for k in range(self.substeps):
            state, following = self.states[k], self.states[k + 1]
            with recording:
                state.clear_forces()
            detection = k if self.collide_every_substep else 0
            if self.pipeline is not None and (k == 0 or self.collide_every_substep):
                pose = self.poses[detection]
                self._eval_fk(self.model, state.joint_q, state.joint_qd, pose)
                self.pipeline.collide(pose, self.contacts[detection])
            with recording:
                self.solver.step(state, following, self.control, self.contacts[detection], self.dt)


@wp.kernel
def _undo_solve_frame_wrench(body_f_ext: wp.array(dtype=wp.spatial_vector), body_q_com: wp.array(dtype=wp.transform),
                             body_solve_origin: wp.array(dtype=wp.vec3)):
    """Invert ``eval_rigid_tau``'s in-place ``f_ext = -(f, τ + x × f)`` (x: the COM in the solve frame)."""
    b = wp.tid()
    v = body_f_ext[b]
    force = -wp.spatial_top(v)
    x = wp.transform_get_translation(body_q_com[b]) - body_solve_origin[b]
    body_f_ext[b] = wp.spatial_vector(force, -wp.spatial_bottom(v) - wp.cross(x, force))


def init_warp() -> None:
    """Initialise warp quietly on a CPU run: the same filter as the cloth (warp's "no CUDA driver" line)."""
    from mbmix_warp.bridge import init_warp as quiet_init
    quiet_init("cpu")
    wp.config.quiet = True
