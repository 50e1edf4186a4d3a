"""Replay buffer: FIFO ring semantics, sampling, and an exact checkpoint round trip."""
from __future__ import annotations

import io

import pytest
import torch

import mbmix_fw as mb


def numbered_batch(start: int, n: int, probes: int = 2) -> mb.TransitionBatch:
    """Transitions whose every field encodes its global index ``i`` (state = [i, i], …)."""
    i = torch.arange(start, start + n, dtype=torch.float32)
    probe = None if probes == 0 else i.view(n, 1, 1).expand(n, probes, 2) + 0.5
    return mb.TransitionBatch(
        state=i.view(n, 1).expand(n, 2).clone(), action=-i.view(n, 1), next_state=i.view(n, 1).expand(n, 2) + 1,
        probe_u=probe, probe_s=None if probe is None else probe + 1,
        probe_a=None if probe is None else (i.view(n, 1, 1).expand(n, probes, 1) + 0.25),
    )


def stored_indices(buffer: mb.ReplayBuffer) -> list[int]:
    return [int(v) for v in buffer.state_dict()["state"][:, 0]]


def test_fifo_wraps_around_and_keeps_the_newest():
    buffer = mb.ReplayBuffer(5, 2, 1, probes=2)
    buffer.add(numbered_batch(0, 3))
    assert len(buffer) == 3 and stored_indices(buffer) == [0, 1, 2]
    buffer.add(numbered_batch(3, 4))  # 3, 4 fill the ring; 5, 6 overwrite 0, 1
    assert len(buffer) == 5 and stored_indices(buffer) == [5, 6, 2, 3, 4]
    buffer.add(numbered_batch(7, 12))  # larger than the capacity: only its last 5 rows survive
    assert len(buffer) == 5 and sorted(stored_indices(buffer)) == [14, 15, 16, 17, 18]
    buffer.add(numbered_batch(19, 1))
    assert sorted(stored_indices(buffer)) == [15, 16, 17, 18, 19]


def test_every_field_stays_aligned_with_its_transition():
    buffer = mb.ReplayBuffer(7, 2, 1, probes=2)
    for start in range(0, 20, 3):
        buffer.add(numbered_batch(start, 3))
    batch = buffer.sample(50, torch.Generator().manual_seed(0))
    i = batch.state[:, 0]
    torch.testing.assert_close(batch.action[:, 0], -i)
    torch.testing.assert_close(batch.next_state[:, 1], i + 1)
    torch.testing.assert_close(batch.probe_u[:, 1, 0], i + 0.5)
    torch.testing.assert_close(batch.probe_s[:, 0, 1], i + 1.5)
    torch.testing.assert_close(batch.probe_a[:, 1, 0], i + 0.25)
    assert set(i.tolist()) <= set(range(14, 21))


def test_sampling_is_reproducible_and_only_from_filled_rows():
    buffer = mb.ReplayBuffer(100, 2, 1, probes=0)
    buffer.add(numbered_batch(0, 4, probes=0))
    first = buffer.sample(64, torch.Generator().manual_seed(3))
    again = buffer.sample(64, torch.Generator().manual_seed(3))
    torch.testing.assert_close(first.state, again.state)
    assert first.probe_u is None
    assert set(first.state[:, 0].tolist()) == {0.0, 1.0, 2.0, 3.0}
    states = buffer.sample_states(10, torch.Generator().manual_seed(3))
    assert states.shape == (10, 2)
    torch.testing.assert_close(states, first.state[:10])


def test_state_dict_round_trip_is_exact_through_weights_only_load():
    buffer = mb.ReplayBuffer(6, 2, 1, probes=2)
    buffer.add(numbered_batch(0, 4))
    buffer.add(numbered_batch(4, 5))  # wrapped: the write position is inside the ring
    file = io.BytesIO()
    torch.save(buffer.state_dict(), file)
    file.seek(0)
    restored = mb.ReplayBuffer(6, 2, 1, probes=2)
    restored.load_state_dict(torch.load(file, weights_only=True))
    assert len(restored) == len(buffer) == 6
    for name, value in buffer.state_dict().items():
        other = restored.state_dict()[name]
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
    a, b = (buf.sample(32, torch.Generator().manual_seed(9)) for buf in (buffer, restored))
    torch.testing.assert_close(a.probe_s, b.probe_s)
    for buf in (buffer, restored):  # both continue identically: the ring position came back too
        buf.add(numbered_batch(9, 2))
    assert stored_indices(buffer) == stored_indices(restored) == [6, 7, 8, 9, 10, 5]


def test_partially_filled_round_trip_keeps_the_size():
    buffer = mb.ReplayBuffer(10, 2, 1, probes=0)
    buffer.add(numbered_batch(0, 3, probes=0))
    restored = mb.ReplayBuffer(10, 2, 1, probes=0)
    restored.load_state_dict(buffer.state_dict())
    restored.add(numbered_batch(3, 1, probes=0))
    assert len(restored) == 4 and stored_indices(restored) == [0, 1, 2, 3]


def test_mismatches_fail_loudly():
    buffer = mb.ReplayBuffer(4, 2, 1, probes=2)
    with pytest.raises(RuntimeError, match="empty"):
        buffer.sample(1)
    with pytest.raises(ValueError, match="probes"):
        buffer.add(numbered_batch(0, 2, probes=0))
    with pytest.raises(ValueError, match="probes"):
        buffer.add(numbered_batch(0, 2, probes=3))
    with pytest.raises(ValueError, match="capacity"):
        mb.ReplayBuffer(5, 2, 1, probes=2).load_state_dict(buffer.state_dict())
    with pytest.raises(ValueError, match="probe_u"):
        mb.ReplayBuffer(4, 2, 1, probes=0).load_state_dict(buffer.state_dict())
    with pytest.raises(ValueError):
        mb.ReplayBuffer(0, 2, 1)
