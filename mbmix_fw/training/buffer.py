"""Replay buffer of simulator transitions (and their Jacobian probes) for world-model fitting."""
from __future__ import annotations

import torch

from ..contracts.world_model import TransitionBatch

_FIELDS = ("state", "action", "next_state", "probe_u", "probe_s", "probe_a")


class ReplayBuffer:
    """A FIFO ring of the last ``capacity`` transitions, preallocated on the training device.

    Storage is fixed at construction, so memory use is known up front:
    ``capacity · (2S + A + P·(2S + A))`` numbers of ``dtype`` (``P = probes``). Sampling is uniform
    with replacement from the generator (on the generator's device, then moved), so a run replays
    exactly. ``state_dict()`` holds plain tensors and ints only (``torch.load(weights_only=True)``
    reads it back) and is part of the run checkpoint, so a resumed run samples what it would have.
    """

    def __init__(self, capacity: int, state_dim: int, action_dim: int, probes: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        if capacity < 1 or state_dim < 1 or action_dim < 1 or probes < 0:
            raise ValueError(f"ReplayBuffer needs capacity, state_dim, action_dim >= 1 and probes >= 0; got "
                             f"{capacity=}, {state_dim=}, {action_dim=}, {probes=}")
        self.capacity, self.state_dim, self.action_dim, self.probes = capacity, state_dim, action_dim, probes
        self.device, self.dtype = torch.device(device), dtype
        shapes = {"state": (state_dim,), "action": (action_dim,), "next_state": (state_dim,)}
        if probes:
            shapes |= {"probe_u": (probes, state_dim), "probe_s": (probes, state_dim),
                       "probe_a": (probes, action_dim)}
        self._data = {k: torch.zeros(capacity, *shape, device=self.device, dtype=dtype)
                      for k, shape in shapes.items()}
        self._size = 0
        self._next = 0  # row the next transition is written to

    def __len__(self) -> int:
        return self._size

    def add(self, batch: TransitionBatch) -> None:
        """Append ``batch`` (oldest rows are overwritten once full). A batch larger than the
        capacity keeps only its last ``capacity`` rows. Probes must match ``probes``: a buffer without
        probes refuses batches that carry them and vice versa, so a mismatch fails loudly."""
        has_probes = batch.probe_u is not None
        if has_probes != bool(self.probes) or (has_probes and batch.probe_u.shape[1] != self.probes):
            got = batch.probe_u.shape[1] if has_probes else 0
            raise ValueError(f"ReplayBuffer holds {self.probes} probes per transition, the batch has {got}")
        columns = {k: getattr(batch, k) for k in self._data}
        n = len(batch)
        if n > self.capacity:
            columns = {k: v[-self.capacity:] for k, v in columns.items()}
            n = self.capacity
        first = min(n, self.capacity - self._next)
        for name, value in columns.items():
            value = value.detach().to(self.device, self.dtype)
            self._data[name][self._next:self._next + first] = value[:first]
            self._data[name][:n - first] = value[first:]
        self._next = (self._next + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    def _indices(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        if self._size == 0:
            raise RuntimeError("cannot sample from an empty ReplayBuffer: add transitions first")
        gen_device = generator.device if generator is not None else torch.device("cpu")
        return torch.randint(self._size, (n,), generator=generator, device=gen_device).to(self.device)

    def sample(self, n: int, generator: torch.Generator | None = None) -> TransitionBatch:
        """``n`` transitions drawn uniformly with replacement (copies, safe to keep)."""
        idx = self._indices(n, generator)
        return TransitionBatch(**{k: v[idx] for k, v in self._data.items()})

    def sample_recent_states(self, n: int, recent: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[n, S]`` states drawn uniformly (with replacement) from the newest ``recent`` transitions."""
        window = min(recent, self._size)
        if window == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        gen_device = generator.device if generator is not None else torch.device("cpu")
        back = torch.randint(window, (n,), generator=generator, device=gen_device).to(self.device)
        return self._data["state"][(self._next - 1 - back) % self.capacity]

    def sample_states(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[n, S]`` states drawn uniformly with replacement (start states of model branches)."""
        return self._data["state"][self._indices(n, generator)]

    def state_dict(self) -> dict:
        """The filled rows, in storage order, plus the ring position: tensors and ints only."""
        return {"capacity": self.capacity, "size": self._size, "next": self._next,
                **{k: v[:self._size].clone() for k, v in self._data.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` of a buffer with the same capacity, dimensions and probes."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"checkpoint buffer capacity {state['capacity']} != this buffer's {self.capacity}")
        size = int(state["size"])
        for name, storage in self._data.items():
            if name not in state or tuple(state[name].shape) != (size, *storage.shape[1:]):
                got = tuple(state[name].shape) if name in state else "missing"
                raise ValueError(f"checkpoint buffer field {name!r} has shape {got}, "
                                 f"expected {(size, *storage.shape[1:])}")
        extra = set(state) - set(self._data) - {"capacity", "size", "next"}
        if extra:
            raise ValueError(f"checkpoint buffer has fields this buffer lacks: {sorted(extra)}")
        for name, storage in self._data.items():
            storage.zero_()
            storage[:size] = state[name].to(self.device, self.dtype)
        self._size, self._next = size, int(state["next"])
