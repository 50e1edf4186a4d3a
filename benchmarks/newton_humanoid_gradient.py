"""Why the Newton humanoid's tape gradient disagreed with central differences in ground contact, and what fixed it.

One env step of ``newton_humanoid`` (one humanoid, float32), the tape's ``d(u·s')/d(hinge angles)`` against
central differences, ``u`` weighting forward velocity, torso height and random hinge rates. Sections:

1. ``detection``: differences with the contacts re-detected at each perturbed pose (what the step does) against
   differences with the detection held at the unperturbed pose (what the tape assumes), mid-fall.
2. ``air``: in the air (no contact, no limit) the error against ``eps``: float32 rounding grows as 1/eps.
3. ``standing``: a humanoid standing on its flat feet, for several substep counts and contact constants; the
   stick/slip flips per step; with contact damping, friction and limit damping off, the error by joint type
   (D6 coordinates vs revolute).
4. ``falling``: states of a fall; coordinates whose +-eps runs cross a contact onset, a joint limit or a
   stick/slip switch somewhere in the step, against those whose runs do not.
5. ``speed``: one step forward, and forward + backward, at 16 and 48 substeps.

    python benchmarks/newton_humanoid_gradient.py [--sections detection air standing falling speed]

Results: benchmarks/RESULTS.md, "Newton humanoid".
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

F64 = torch.float64


def make(**overrides):
    from mbmix_newton import NewtonHumanoid, NewtonHumanoidConfig
    env = NewtonHumanoid(NewtonHumanoidConfig(num_envs=1, **overrides))
    env.sim.use_graphs = False  # the diagnostics below read every substep's buffers
    env.sim._workspaces.clear()
    return env


class Probe:
    """One humanoid's step through the bridge's workspace: outputs, per-substep regimes, frozen detection."""

    def __init__(self, env, seed=3, torque_scale=0.0):
        self.env, self.ws = env, env.sim.workspace(1)
        g = torch.Generator().manual_seed(seed)
        nq, nd = env.nq, env.nd
        self.u = torch.zeros(1, nq + nd, dtype=F64)
        self.u[:, nq], self.u[:, 2] = 1.0, 1.0
        self.u[:, nq + 6:] = torch.randn(1, nd - 6, generator=g, dtype=F64)
        self.f = env.joint_forces(torque_scale * (2 * torch.rand(1, env.action_dim, generator=g, dtype=F64) - 1))
        m = self.ws.model
        self.shape_body, self.com = m.shape_body.numpy(), m.body_com.numpy()
        self.lower, self.upper = m.joint_limit_lower.numpy()[6:], m.joint_limit_upper.numpy()[6:]
        c = env.config
        self.ke, self.kd, self.kf, self.mu = c.contact_ke, c.contact_kd, c.contact_kf, c.contact_mu

    def output(self, q, qd):
        with torch.no_grad():
            self.ws.load((q.float(), qd.float(), self.f))
            self.ws.run()
            return float((torch.cat([self.ws.q[-1].double(), self.ws.qd[-1].double()], 1) * self.u).sum())

    def tape(self, q, qd):
        x = q.clone().requires_grad_(True)
        q1, qd1 = self.env.sim.step(x.float(), qd.float().contiguous(), self.f)
        (torch.cat([q1.double(), qd1.double()], 1) * self.u).sum().backward()
        return x.grad[0, 7:].clone()

    def differences(self, q, qd, eps, frozen=False, regimes=False):
        """Central differences over the hinge angles; ``frozen``: keep the unperturbed pose's contacts;
        ``regimes``: also whether each coordinate's +-eps runs pass through the same regimes."""
        pipeline = self.ws.pipeline
        if frozen:
            self.output(q, qd)
            self.ws.pipeline = None  # run() skips detection and reuses the buffer
        fd, same = [], []
        try:
            for i in range(7, q.shape[1]):
                e = torch.zeros_like(q)
                e[0, i] = eps
                plus = self.output(q + e, qd)
                rp = self.regimes() if regimes else None
                minus = self.output(q - e, qd)
                rm = self.regimes() if regimes else None
                fd.append((plus - minus) / (2 * eps))
                same.append(bool((rp == rm).all()) if regimes else True)
        finally:
            self.ws.pipeline = pipeline
        return torch.tensor(fd, dtype=F64), torch.tensor(same)

    def regimes(self) -> np.ndarray:
        """``[substeps, ...]`` booleans of the last run: each contact penetrating, damped (approaching), slipping,
        and each hinge beyond a limit -- the branches of Newton's contact and limit forces."""
        c = self.ws.contacts[0]
        n_c = int(c.rigid_contact_count.numpy()[0])
        arrays = [a.numpy()[:n_c] for a in (c.rigid_contact_shape0, c.rigid_contact_shape1, c.rigid_contact_point0,
                                            c.rigid_contact_point1, c.rigid_contact_normal, c.rigid_contact_margin0,
                                            c.rigid_contact_margin1)]
        rows = []
        for k in range(self.ws.substeps):
            body_q, body_qd = self.ws.states[k].body_q.numpy(), self.ws.states[k + 1].body_qd_fk.numpy()
            row = []
            for s0, s1, p0, p1, normal, m0, m1 in zip(*arrays):
                n = -normal
                x, v = [], []
                for shape, p, margin, sign in ((s0, p0, m0, -1.0), (s1, p1, m1, 1.0)):
                    b = self.shape_body[shape]
                    if b < 0:
                        x.append(p + sign * margin * n)
                        v.append(np.zeros(3))
                        continue
                    point = body_q[b][:3] + rotate(body_q[b][3:], p) + sign * margin * n
                    r = point - (body_q[b][:3] + rotate(body_q[b][3:], self.com[b]))
                    x.append(point)
                    v.append(body_qd[b][:3] + np.cross(body_qd[b][3:], r))
                d = float(n @ (x[0] - x[1]))
                rel = v[0] - v[1]
                vn = float(n @ rel)
                vt = rel - n * vn
                limit = -self.mu * (d * self.ke + min(vn, 0.0) * self.kd * (d < 0))
                slip = d < 0 and limit > 0 and self.kf > 0 and float(vt @ vt) > (limit / self.kf) ** 2
                row += [d < 0, d < 0 and vn < 0, slip]
            hinge = self.ws.states[k].joint_q.numpy()[7:]
            row += list((hinge < self.lower) | (hinge > self.upper))
            rows.append(row)
        return np.array(rows)

    def flips(self, q, qd) -> int:
        """Stick/slip switches of all contacts within the step from ``(q, qd)``."""
        self.output(q, qd)
        r = self.regimes()
        n_c = (r.shape[1] - len(self.lower)) // 3
        slip = r[:, :3 * n_c].reshape(len(r), n_c, 3)[..., 2]
        return int((slip[1:] != slip[:-1]).sum())


def rotate(quat, v):
    x, y, z, w = quat
    u = np.array([x, y, z])
    return v + 2 * w * np.cross(u, v) + 2 * np.cross(u, np.cross(u, v))


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def standing(env, steps=3):
    """The zero pose at rest with the feet 3 mm into the ground, after ``steps`` steps of zero action."""
    q = env.start_q[None].clone()
    q[0, 2] = 1.2825
    qd = torch.zeros(1, env.nd, dtype=F64)
    zero = torch.zeros(1, env.nd)
    with torch.no_grad():
        for _ in range(steps):
            qf, qdf = env.sim.step(q.float(), qd.float(), zero)
            q, qd = qf.double(), qdf.double()
    return q, qd


def falling(env, steps):
    """The zero pose dropped from 1.35 m with zero action: the state after each of ``steps``."""
    q = env.start_q[None].clone()
    qd = torch.zeros(1, env.nd, dtype=F64)
    zero, out = torch.zeros(1, env.nd), {}
    with torch.no_grad():
        for t in range(max(steps) + 1):
            if t in steps:
                out[t] = (q.clone(), qd.clone())
            qf, qdf = env.sim.step(q.float(), qd.float(), zero)
            q, qd = qf.double(), qdf.double()
    return out


def section_detection():
    print("## detection: re-detected vs frozen contacts (mid-fall, step 40; 16 and 48 substeps)")
    for substeps in (16, 48):
        env = make(substeps=substeps)
        probe = Probe(env, torque_scale=0.2)
        q, qd = falling(env, [40])[40]
        tape = probe.tape(q, qd)
        for eps in (1e-3, 3e-4):
            redetected, _ = probe.differences(q, qd, eps)
            frozen, _ = probe.differences(q, qd, eps, frozen=True)
            print(f"substeps {substeps} eps {eps:g}: rel err re-detected {rel(tape, redetected):.4f}, frozen "
                  f"{rel(tape, frozen):.4f}; re-detected vs frozen {rel(redetected, frozen):.1e}", flush=True)


def section_air():
    print("## air: humanoid 1 m up, no contact, no limit (48 substeps)")
    env = make()
    probe = Probe(env)
    q = env.start_q[None].clone()
    q[0, 2] += 1.0
    qd = torch.zeros(1, env.nd, dtype=F64)
    tape = probe.tape(q, qd)
    for eps in (1e-2, 3e-3, 1e-3, 3e-4, 1e-4):
        fd, _ = probe.differences(q, qd, eps)
        print(f"eps {eps:g}: rel err {rel(tape, fd):.4f}", flush=True)


def section_standing():
    print("## standing: feet on the ground, zero action, one step; error at eps 1e-3 / 3e-4, stick-slip flips")
    configs = [("16 substeps, kd 1e3 (ant/hopper damping)", dict(substeps=16)),
               ("16 substeps, no contact damping, friction, limit damping", dict(substeps=16, contact_kd=0.0,
                                                                                contact_kf=0.0, contact_mu=0.0,
                                                                                limit_kd=0.0)),
               ("16 substeps, friction only (kd 0)", dict(substeps=16, contact_kd=0.0, limit_kd=0.0)),
               ("48 substeps, kd 5e3 (DiffRL's humanoid)", dict(contact_kd=5e3)),
               ("48 substeps, kd 1e3 (newton_humanoid)", dict())]
    for name, overrides in configs:
        env = make(**overrides)
        probe = Probe(env)
        for steps in (0, 3):
            q, qd = standing(env, steps)
            tape = probe.tape(q, qd)
            errors = [rel(tape, probe.differences(q, qd, eps)[0]) for eps in (1e-3, 3e-4)]
            print(f"{name}, after {steps} steps: rel err {errors[0]:.4f} / {errors[1]:.4f}, stick-slip flips "
                  f"{probe.flips(q, qd)}", flush=True)
            if "no contact damping" in name:
                fd, _ = probe.differences(q, qd, 1e-3)
                m = env.sim.workspace(1).model
                kinds = np.repeat(m.joint_type.numpy()[1:], np.diff(m.joint_q_start.numpy())[1:])
                d6 = torch.tensor(kinds == kinds.max())  # Newton's D6 joint has the largest type id here
                print(f"    by joint type at eps 1e-3: D6 coordinates ({int(d6.sum())}) {rel(tape[d6], fd[d6]):.4f}, "
                      f"revolute ({int((~d6).sum())}) {rel(tape[~d6], fd[~d6]):.4f}", flush=True)


def section_falling():
    print("## falling: dropped from 1.35 m; coordinates whose +-eps runs switch a regime vs not (48 substeps)")
    env = make()
    probe = Probe(env)
    for t, (q, qd) in falling(env, [25, 40, 100]).items():
        tape = probe.tape(q, qd)
        for eps in (1e-3, 3e-4):
            fd, same = probe.differences(q, qd, eps, regimes=True)
            switched = ~same
            print(f"step {t} (torso {float(q[0, 2]):.2f} m) eps {eps:g}: all {rel(tape, fd):.4f}; no switch "
                  f"({int(same.sum())}) {rel(tape[same], fd[same]) if same.any() else float('nan'):.4f}; "
                  f"switching ({int(switched.sum())}) "
                  f"{rel(tape[switched], fd[switched]) if switched.any() else float('nan'):.4f}", flush=True)


def section_speed(n=16, reps=10):
    print(f"## speed: {n} humanoids, one step (captured graphs), ms")
    from mbmix_newton import NewtonHumanoid, NewtonHumanoidConfig
    for substeps in (16, 48):
        env = NewtonHumanoid(NewtonHumanoidConfig(num_envs=n, substeps=substeps))
        s = env.reset(n, torch.Generator().manual_seed(0))
        a = torch.zeros(n, env.action_dim)
        with torch.no_grad():
            env.step(s, a)
            start = time.perf_counter()
            for _ in range(reps):
                env.step(s, a)
            forward = (time.perf_counter() - start) / reps
        x = s.clone().requires_grad_(True)
        env.step(x, a).sum().backward()
        start = time.perf_counter()
        for _ in range(reps):
            x = s.clone().requires_grad_(True)
            env.step(x, a).sum().backward()
        both = (time.perf_counter() - start) / reps
        print(f"substeps {substeps}: forward {1e3 * forward:.1f}, forward + backward {1e3 * both:.1f}", flush=True)


SECTIONS = {"detection": section_detection, "air": section_air, "standing": section_standing,
            "falling": section_falling, "speed": section_speed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.sections:
        SECTIONS[name]()


if __name__ == "__main__":
    main()
