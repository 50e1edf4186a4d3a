"""Policy, critic and observation normaliser shared by every estimator (written once)."""
from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


def mlp(sizes: list[int], activation: str = "elu", layer_norm: bool = True) -> nn.Sequential:
    """Linear layers of ``sizes``; hidden layers get LayerNorm (optional) and the activation."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            if layer_norm:
                layers.append(nn.LayerNorm(fan_out))
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class TanhGaussianPolicy(nn.Module):
    """``a = tanh(μ(o) + σ·ε)``, ``ε ~ N(0, I)`` drawn from the caller's generator (reparameterised).

    State-independent log-std as in SHAC. Actions lie in ``(-1, 1)``; envs scale them. With
    ``hidden=[]`` and ``squash=False`` it is the linear-Gaussian policy ``a = W·o + b + σ·ε`` whose exact
    gradient the study envs (LQR, tabular MDP) can compute.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden=(64, 64), activation="elu",
                 layer_norm=True, init_log_std: float = -1.0, squash: bool = True):
        super().__init__()
        self.squash = squash
        self.mean = mlp([obs_dim, *hidden, action_dim], activation, layer_norm)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))

    def forward(self, obs: torch.Tensor, generator: torch.Generator | None = None,
                deterministic: bool = False) -> torch.Tensor:
        mu = self.mean(obs)
        if deterministic:
            pre = mu
        else:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            pre = mu + self.log_std.exp() * eps
        return torch.tanh(pre) if self.squash else pre


class Critic(nn.Module):
    """State-value MLP ``V(o) -> [...]``."""

    def __init__(self, obs_dim: int, hidden=(64, 64), activation="elu", layer_norm=True):
        super().__init__()
        self.net = mlp([obs_dim, *hidden, 1], activation, layer_norm)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


class RunningMoments(nn.Module):
    """Running mean and variance of every row folded in, in float64 buffers (so part of ``state_dict``).

    One implementation of the statistics that the observation normaliser and the world models' input and
    output scalings both keep: batches are combined exactly (Chan et al.'s parallel update), so the result
    does not depend on how the rows were batched, and the buffers stay float64 whatever ``.to(dtype)`` the
    owning module receives. Subclasses compute a batch's mean and variance their own way and :meth:`fold` it.
    """

    def __init__(self, dim: int, initial_count: float = 0.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(initial_count, dtype=torch.float64))

    def _apply(self, fn, recurse=True):
        """Keep the statistics float64 whatever ``.to(dtype)`` the module receives."""
        super()._apply(fn, recurse)
        for name, value in self._buffers.items():
            self._buffers[name] = value.to(torch.float64)
        return self

    @torch.no_grad()
    def fold(self, batch_mean: torch.Tensor, batch_var: torch.Tensor, n) -> None:
        """Combine a batch of ``n`` rows with mean ``batch_mean`` and (biased) variance ``batch_var``."""
        delta, total = batch_mean - self.mean, self.count + n
        mean = self.mean + delta * n / total
        var = (self.var * self.count + batch_var * n + delta.pow(2) * self.count * n / total) / total
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.copy_(total)


class ObsNormalizer(RunningMoments):
    """Running mean/variance of observations, frozen while a window is rolled out.

    ``normalize`` uses the statistics as they were after the last ``update``; the trainer calls
    ``update`` once per iteration with that window's observations, so statistics never move inside a
    window (the gradient path stays consistent). Buffers, so they are part of ``state_dict``.
    """

    def __init__(self, dim: int, eps: float = 1e-5, clip: float = 10.0):
        super().__init__(dim, initial_count=eps)
        self.eps, self.clip = eps, clip

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(obs.dtype)
        std = (self.var.to(obs.dtype) + self.eps).sqrt()
        return ((obs - mean) / std).clamp(-self.clip, self.clip)

    @torch.no_grad()
    def update(self, obs: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Fold the observations ``[..., O]`` into the statistics; with ``mask`` (bool, ``obs``'s leading
        shape) only the rows where it is set. Rows with a non-finite entry are always left out, so one
        diverged simulator state cannot poison the statistics. Runs on the device without reading it
        back (a batch with no valid row changes nothing)."""
        flat = obs.reshape(-1, obs.shape[-1]).to(torch.float64)
        keep = torch.isfinite(flat).all(-1)
        if mask is not None:
            keep = keep & mask.reshape(-1)
        weight = keep.to(torch.float64).unsqueeze(-1)
        flat = torch.where(keep.unsqueeze(-1), flat, torch.zeros_like(flat))
        n = weight.sum()
        safe_n = n.clamp_min(1.0)
        batch_mean = (flat * weight).sum(0) / safe_n
        batch_var = ((flat - batch_mean).pow(2) * weight).sum(0) / safe_n
        self.fold(batch_mean, batch_var, n)
