"""The GPU hot loop: one model-free iteration reads the device from the host a bounded number of times,
whatever the horizon and the number of critic minibatches (counted on CPU with mbmix_fw.training.sync_count)."""
from __future__ import annotations

import pytest
import torch

from mbmix_estimators import Mix, MixConfig, Shac, ShacConfig
from mbmix_fw.training.sync_count import count_host_reads
from mbmix_fw.testing import LinearEnv, tiny_trainer


def host_reads_per_iteration(estimator, minibatches: int, episode_length: int = 6) -> int:
    # episode_length < horizon: episodes end (and reset) inside every window
    trainer = tiny_trainer(LinearEnv(num_envs=8, episode_length=episode_length), estimator,
                           critic={"iterations": 3, "minibatches": minibatches})
    trainer._read_metrics(trainer._iterate(trainer.scheduler.plan(0, 4)))  # warm-up (lazy inits)
    with count_host_reads(where=True) as reads:
        metrics = trainer._read_metrics(trainer._iterate(trainer.scheduler.plan(1, 4)))
    assert metrics["train/episodes"] > 0 and metrics["estimator/episode_ends"] > 0
    return reads.total, dict(reads.by_site)


@pytest.mark.parametrize("make", [lambda h: Shac(ShacConfig(horizon=h)), lambda h: Mix(MixConfig(horizon=h))],
                         ids=["shac", "mix"])
def test_one_host_read_per_iteration_whatever_the_horizon_and_minibatches(make):
    counts = {(h, m): host_reads_per_iteration(make(h), m) for h, m in [(4, 1), (16, 8)]}
    for (h, m), (total, sites) in counts.items():
        assert total == 1, (h, m, sites)  # the one transfer of all metrics in Trainer._read_metrics


def test_the_counter_sees_what_would_synchronise():
    x = torch.ones(3)
    with count_host_reads() as reads:
        bool(x.any()), float(x.sum()), x.sum().item(), x[x > 0], torch.equal(x, x), x.tolist()
    assert reads.total == 6, dict(reads.by_name)
