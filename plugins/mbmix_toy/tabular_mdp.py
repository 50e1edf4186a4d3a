"""A random finite MDP made differentiable, with an exact policy gradient to measure bias against.

Why it is here: a discrete problem whose true gradient is a linear solve, so an estimator's bias and
variance can be measured exactly — including the bias a convenient relaxation introduces.

Relaxation (``S = n_states``, ``K = n_actions``):

- **state** ``x [N, S]``: a non-negative weight vector; numerically one-hot ``e_s`` of the current state.
- **observation** ``x / Σx`` (= ``e_s`` numerically). It is scale-invariant, which is what keeps the
  gradient unbiased below: along a trajectory the state only ever changes by a scale, so the policy's
  *input* never carries gradient, while ``observe`` stays an ordinary differentiable function.
- **action** ``a [N, K]``: logits; the env uses ``π = softmax(a)`` and marginalises the action analytically
  (no action is sampled): reward ``r = Σ_i x_i Σ_k π_k R[i, k]``, next-state weights
  ``p = Σ_i x_i Σ_k π_k P[i, k, :]`` — both linear in ``x``.
- **next state**: ``j ~ Categorical(p / Σp)`` drawn by inverse CDF from the generator (torch's global RNG
  when ``generator`` is None: this MDP has no noise-free mode), then

  - ``relaxation = "score"`` (default, **unbiased**): ``x' = e_j · p_j / stopgrad(p_j)``. The value is
    ``e_j``; the gradient is ``e_j ∇ log p_j``. Everything downstream is homogeneous of degree 1 in ``x'``
    given the later samples, so backpropagating a full episode yields ``Σ_t ∇r_t + G_{t+1} ∇ log p_{j}``
    (``G`` = discounted future reward): the likelihood-ratio estimator over next states with the action
    marginalised, an unbiased estimate of the exact gradient below.
  - ``relaxation = "straight_through"`` (**biased**, lower variance): ``x' = e_j + p - stopgrad(p)``. Its
    gradient credits a change of ``p_i`` with the return of state ``i`` *acted on with the policy of the
    sampled state j*, which equals the true value only for state-independent policies. Kept as a study
    setting: the bias is measurable against :meth:`TabularMDP.exact_policy_gradient` (tests show ≈10 %).

Caveat for window estimators (SHAC, MB-MIX): ``V(observe(x))`` is scale-invariant, so a bootstrap
critic passes *no* gradient back through ``x`` under ``score``; only full-episode BPTT is unbiased there.

Exact objective (policy ``π_s = softmax(W e_s + b)``, i.e. the linear policy's mean on the one-hot
observation; policy noise must vanish: build it with ``init_log_std = -20``)::

    J = d0ᵀ Σ_{t<T} (γ P_π)^t r_π,    r_π[s] = Σ_k π_s[k] R[s, k],   P_π[s, s'] = Σ_k π_s[k] P[s, k, s']

with ``T = episode_length`` and ``d0`` uniform: exactly the expected discounted reward of one episode as
the env computes it (finite horizon, not ``(I - γP_π)^{-1}``). ``R[s, k] ~ N(0, 1)``;
``P[s, k, :] = softmax(z / transition_temperature)``, ``z ~ N(0, I)``; both depend only on ``config.seed``.
"""
from __future__ import annotations


import torch

import mbmix_fw as mb

from .configs import TabularMDPConfig

from .linear_policy import exact_gradient, linear_gaussian_parts, policy_value

MAX_POLICY_STD = 1e-6
"""Largest policy σ for which the exact gradient (which assumes σ → 0) is accepted."""


def mdp_tables(config: TabularMDPConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R [S, K], P [S, K, S])`` in float64 on the CPU, a function of ``config`` alone."""
    g = torch.Generator().manual_seed(config.seed)
    s, k = config.n_states, config.n_actions
    R = torch.randn(s, k, generator=g, dtype=torch.float64)
    logits = torch.randn(s, k, s, generator=g, dtype=torch.float64)
    P = torch.softmax(logits / config.transition_temperature, dim=-1)
    return R, P


class TabularMDP(mb.DiffEnv):
    """Random finite MDP with a documented differentiable relaxation (see the module docstring)."""

    def __init__(self, config: TabularMDPConfig, ctx: mb.BuildContext | None = None):
        ctx = ctx or mb.BuildContext.cpu()
        self.config = config
        self.num_envs, self.episode_length = config.num_envs, config.episode_length
        self.state_dim = self.obs_dim = config.n_states
        self.action_dim = config.n_actions
        self.device, self.dtype = ctx.device, ctx.dtype
        R, P = mdp_tables(config)
        self.R64, self.P64 = R.to(self.device), P.to(self.device)

    def reset(self, n, generator=None):
        index = torch.randint(self.state_dim, (n,), generator=generator, device=self.device)
        return torch.nn.functional.one_hot(index, self.state_dim).to(self.dtype)

    def _next_weights(self, state, action):
        pi = torch.softmax(action, dim=-1)  # [N, K]
        per_action = (state @ self.P64.to(state.dtype).reshape(self.state_dim, -1)).view(-1, self.action_dim, self.state_dim)
        return (pi.unsqueeze(-1) * per_action).sum(1)

    def step(self, state, action, generator=None):
        p = self._next_weights(state, action)
        cdf = (p / p.sum(-1, keepdim=True)).detach().cumsum(-1)
        u = torch.rand(p.shape[0], 1, generator=generator, device=p.device, dtype=p.dtype)
        index = (cdf < u).sum(-1).clamp(max=self.state_dim - 1)
        one_hot = torch.nn.functional.one_hot(index, self.state_dim).to(p.dtype)
        if self.config.relaxation == "straight_through":
            return one_hot + (p - p.detach())
        p_j = (p * one_hot).sum(-1, keepdim=True)
        return one_hot * (p_j / p_j.detach())

    def reward(self, state, action, next_state):
        pi = torch.softmax(action, dim=-1)
        return ((state @ self.R64.to(state.dtype)) * pi).sum(-1)

    def observe(self, state):
        return state / state.sum(-1, keepdim=True)

    def closed_form_return(self, W: torch.Tensor, b: torch.Tensor, gamma: float) -> torch.Tensor:
        """``d0ᵀ Σ_{t<T} (γP_π)^t r_π`` (float64 scalar) for ``π_s = softmax(W e_s + b)``; differentiable."""
        pi = torch.softmax(W.T + b, dim=-1)  # [S, K]: row s is the policy at state s
        r_pi = (pi * self.R64.to(W.device)).sum(-1)
        P_pi = torch.einsum("sk,skj->sj", pi, self.P64.to(W.device))
        dist = torch.full((self.state_dim,), 1.0 / self.state_dim, dtype=torch.float64, device=W.device)
        total = torch.zeros((), dtype=torch.float64, device=W.device)
        for t in range(self.episode_length):
            total = total + gamma**t * (dist @ r_pi)
            dist = dist @ P_pi
        return total

    def _objective(self, policy, gamma):
        _, log_std = linear_gaussian_parts(policy, self.obs_dim, self.action_dim, "tabular_mdp")
        std = float(log_std.detach().exp().max())
        if std > MAX_POLICY_STD:
            raise mb.UserError(
                f"tabular_mdp: the exact policy gradient assumes a deterministic policy (σ → 0) but the "
                f"policy's largest σ is {std:.3g} > {MAX_POLICY_STD:g}; build it with init_log_std = -20"
            )
        return lambda W, b, log_std: self.closed_form_return(W, b, gamma)

    def expected_return(self, policy, gamma: float) -> torch.Tensor:
        """Exact expected discounted return of one episode (float64, differentiable w.r.t. W and b)."""
        return policy_value(policy, self.obs_dim, self.action_dim, "tabular_mdp", self._objective(policy, gamma))

    def exact_policy_gradient(self, policy, gamma: float) -> list[torch.Tensor]:
        """``∇θ J`` for the linear policy on one-hot observations (float64; zero for ``log_std``,
        which the σ → 0 objective does not depend on). Observation normalisation must be off."""
        return exact_gradient(policy, self.obs_dim, self.action_dim, "tabular_mdp", self._objective(policy, gamma))
