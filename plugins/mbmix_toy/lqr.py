"""Linear-quadratic regulator with process noise: the study env whose policy gradient is exact.

Why it is here: for a linear-Gaussian policy the expected discounted return is a closed-form function
of the policy parameters, so estimators (BPTT, SHAC, MB-MIX) can be scored for *bias* against the true
gradient, not only for variance (``mbmix-fw diagnose variance``).

Contract (``S = state_dim``, ``A = action_dim``; observation = state)::

    s' = A s + B u + w,    u = action_scale · a,    w ~ N(0, noise_std² I)   (w = 0 when generator is None)
    r(s, a) = -(state_cost · |s|² + action_cost · |u|²)                       (on the state *before* the step)
    s_0 ~ N(0, init_std² I)

Actions are *not* clipped to ``[-1, 1]`` (a clip would break the closed form); use an unsquashed policy.
``A`` is a Gaussian matrix rescaled to spectral radius ``spectral_radius``; ``B`` is Gaussian with
entries of variance ``1/S``. Both depend only on ``config.seed`` (never the run seed), so a recipe
names one system.

Exact return (see :meth:`LQR.expected_return`): with ``a = W s + b + σ ε`` and ``K = A + c B W``
(``c = action_scale``) the state stays Gaussian, ``s_t ~ N(μ_t, Σ_t)``::

    μ_{t+1} = K μ_t + c B b,    Σ_{t+1} = K Σ_t Kᵀ + c² B diag(σ²) Bᵀ + noise_std² I
    E[r_t]  = -(q (tr Σ_t + |μ_t|²) + r c² (tr(W Σ_t Wᵀ + diag σ²) + |W μ_t + b|²))
    J       = Σ_{t<T} γ^t E[r_t]        (T = episode_length: one episode from the reset distribution)

Truncated BPTT's window objective (``window = (k, H)``, ``k + H ≤ T``): the discounted return of steps
``k … k+H-1``, discounted from the window start, with the window's start distribution ``N(μ_k, Σ_k)``
held constant (the graph is cut between windows, so no gradient flows through how the policy shaped
``s_k``)::

    J_{k,H} = Σ_{h<H} γ^h E[r_{k+h}],   μ_k, Σ_k computed under stop-gradient parameters
"""
from __future__ import annotations


import torch

import mbmix_fw as mb

from .configs import LQRConfig

from .linear_policy import exact_gradient, policy_value


def system_matrices(config: LQRConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A [S, S], B [S, A])`` in float64 on the CPU, a function of ``config`` alone."""
    g = torch.Generator().manual_seed(config.seed)
    s, a = config.state_dim, config.action_dim
    raw = torch.randn(s, s, generator=g, dtype=torch.float64)
    radius = torch.linalg.eigvals(raw).abs().max()
    A = raw * (config.spectral_radius / radius)
    B = torch.randn(s, a, generator=g, dtype=torch.float64) / s**0.5
    return A, B


class LQR(mb.DiffEnv):
    """Noisy LQR (see the module docstring for dynamics, reward and the exact gradient)."""

    def __init__(self, config: LQRConfig, ctx: mb.BuildContext | None = None):
        ctx = ctx or mb.BuildContext.cpu()
        self.config = config
        self.num_envs, self.episode_length = config.num_envs, config.episode_length
        self.state_dim = self.obs_dim = config.state_dim
        self.action_dim = config.action_dim
        self.device, self.dtype = ctx.device, ctx.dtype
        A, B = system_matrices(config)
        self.A64, self.B64 = A.to(self.device), B.to(self.device)

    def reset(self, n, generator=None):
        shape = (n, self.state_dim)
        return self.config.init_std * torch.randn(shape, generator=generator, device=self.device, dtype=self.dtype)

    def step(self, state, action, generator=None):
        A, B = self.A64.to(state.dtype), self.B64.to(state.dtype)
        nxt = state @ A.T + (self.config.action_scale * action) @ B.T
        if generator is not None and self.config.noise_std > 0:
            noise = torch.randn(nxt.shape, generator=generator, device=nxt.device, dtype=nxt.dtype)
            nxt = nxt + self.config.noise_std * noise
        return nxt

    def reward(self, state, action, next_state):
        c = self.config
        u = c.action_scale * action
        return -(c.state_cost * state.pow(2).sum(-1) + c.action_cost * u.pow(2).sum(-1))

    def observe(self, state):
        return state

    def closed_form_return(self, W: torch.Tensor, b: torch.Tensor, log_std: torch.Tensor, gamma: float,
                           window: tuple[int, int] | None = None) -> torch.Tensor:
        """``E[Σ_{t<T} γ^t r_t]`` (float64 scalar) for ``a = W s + b + exp(log_std) ε``; differentiable.

        ``window = (k, H)``: truncated BPTT's ``J_{k,H}`` instead (module docstring): the first ``k``
        steps move the moments under detached parameters, then ``H`` steps are summed from discount 1."""
        skip, steps = window if window is not None else (0, self.episode_length)
        if skip < 0 or steps < 1 or skip + steps > self.episode_length:
            raise ValueError(f"window {window} does not fit an episode of {self.episode_length} steps")
        mean, cov = self._moments_after(skip, W.detach(), b.detach(), log_std.detach())
        return self._discounted_reward_sum(W, b, log_std, gamma, mean, cov, steps)

    def _moments_after(self, steps: int, W, b, log_std) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and covariance of the state after ``steps`` steps from the reset distribution."""
        eye = torch.eye(self.state_dim, dtype=torch.float64, device=W.device)
        mean = torch.zeros(self.state_dim, dtype=torch.float64, device=W.device)
        cov = self.config.init_std**2 * eye
        K, shift, injected = self._moment_maps(W, b, log_std)
        for _ in range(steps):
            mean, cov = K @ mean + shift, K @ cov @ K.T + injected
        return mean, cov

    def _moment_maps(self, W, b, log_std):
        """``(K, c B b, injected covariance)`` of one closed-loop step (module docstring)."""
        c = self.config
        A, B = self.A64.to(W.device), self.B64.to(W.device)
        eye = torch.eye(self.state_dim, dtype=torch.float64, device=W.device)
        K = A + c.action_scale * B @ W
        injected = c.action_scale**2 * (B * torch.exp(2 * log_std)) @ B.T + c.noise_std**2 * eye
        return K, c.action_scale * B @ b, injected

    def _discounted_reward_sum(self, W, b, log_std, gamma: float, mean, cov, steps: int) -> torch.Tensor:
        """``Σ_{t<steps} γ^t E[r_t]`` from a state distribution ``N(mean, cov)``."""
        c = self.config
        var_a = torch.exp(2 * log_std)
        K, shift, injected = self._moment_maps(W, b, log_std)
        total = torch.zeros((), dtype=torch.float64, device=W.device)
        for t in range(steps):
            action_mean = W @ mean + b
            action_second = torch.trace(W @ cov @ W.T) + var_a.sum() + action_mean.pow(2).sum()
            state_second = torch.trace(cov) + mean.pow(2).sum()
            expected_reward = -(c.state_cost * state_second + c.action_cost * c.action_scale**2 * action_second)
            total = total + gamma**t * expected_reward
            mean = K @ mean + shift
            cov = K @ cov @ K.T + injected
        return total

    def expected_return(self, policy, gamma: float) -> torch.Tensor:
        """Exact expected discounted return of one episode under ``policy`` (float64, differentiable
        w.r.t. the policy's parameters). Raises :class:`mbmix_fw.UserError` for unsupported policies."""
        return policy_value(policy, self.obs_dim, self.action_dim, "lqr",
                            lambda W, b, ls: self.closed_form_return(W, b, ls, gamma))

    def exact_policy_gradient(self, policy, gamma: float) -> list[torch.Tensor]:
        """``∇θ E[Σ_{t<T} γ^t r_t]`` for the linear-Gaussian ``policy`` (float64, by autograd on the
        closed form; observation normalisation must be off: the policy sees the raw state)."""
        return exact_gradient(policy, self.obs_dim, self.action_dim, "lqr",
                              lambda W, b, ls: self.closed_form_return(W, b, ls, gamma))

    def exact_window_gradient(self, policy, gamma: float, window: tuple[int, int]) -> list[torch.Tensor]:
        """``∇θ J_{k,H}``, the expected gradient of truncated BPTT's window ``window = (k, H)`` (module
        docstring; float64, shaped like ``policy.parameters()``)."""
        return exact_gradient(policy, self.obs_dim, self.action_dim, "lqr",
                              lambda W, b, ls: self.closed_form_return(W, b, ls, gamma, window))
