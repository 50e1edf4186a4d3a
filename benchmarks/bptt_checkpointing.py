"""What does gradient checkpointing save on a 1000-step BPTT episode, and what does it cost in time?

Each configuration runs in its own subprocess (peak RSS cannot be reset inside a process): build the
pendulum with 1000-step episodes and 64 envs, a 256x256 policy, take one ``bptt`` gradient and report the
growth of peak resident memory during it (``ru_maxrss`` after minus before) and the wall time. The baseline
(``checkpoint_segments = 0``) is measured in the same run; the script prints memory and time ratios and
checks that both gradients are identical.

Run: ``python benchmarks/bptt_checkpointing.py [--segments 32]`` (under a minute on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
import mbmix_fw as mb
from mbmix_estimators import Bptt, BpttConfig
from mbmix_toy import Pendulum, PendulumConfig
torch.set_num_threads(1)
segments = int(sys.argv[1])
env = Pendulum(PendulumConfig(num_envs=64, episode_length=1000), mb.BuildContext.cpu())
torch.manual_seed(0)
policy = mb.TanhGaussianPolicy(env.obs_dim, env.action_dim, hidden=(256, 256))
estimator = Bptt(BpttConfig(checkpoint_segments=segments))
inp = mb.EstimatorInput(policy_fn=lambda o, g: policy(o, g), value_fn=lambda o: o.sum(-1) * 0, env=env,
                        dynamics=env, start=mb.Cursor(env.reset(64), None),
                        generator=torch.Generator().manual_seed(1))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
estimator.estimate(inp).loss.backward()
elapsed = time.perf_counter() - started
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
grad = torch.cat([p.grad.flatten() for p in policy.parameters()])
print(json.dumps({"mib": (after - before) / 1024, "seconds": elapsed, "grad_norm": float(grad.norm()),
                  "grad_sum": float(grad.sum())}))
"""


def measure(segments: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(segments)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=32)
    args = parser.parse_args()
    base, ckpt = measure(0), measure(args.segments)
    print(f"no checkpointing : {base['mib']:7.1f} MiB peak growth, {base['seconds']:.2f} s")
    print(f"{args.segments:3d} segments      : {ckpt['mib']:7.1f} MiB peak growth, {ckpt['seconds']:.2f} s")
    print(f"memory ratio (checkpointed / plain): {ckpt['mib'] / base['mib']:.2f}")
    print(f"time ratio   (checkpointed / plain): {ckpt['seconds'] / base['seconds']:.2f}")
    same = base["grad_norm"] == ckpt["grad_norm"] and base["grad_sum"] == ckpt["grad_sum"]
    print(f"identical gradient: {same}")


if __name__ == "__main__":
    main()
