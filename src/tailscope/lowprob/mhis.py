"""Metropolis–Hastings importance sampling, MHIS (METHODS.md §3).

Chains walk over inputs with stationary distribution q(x) ∝ p(x) exp(M_t(x)/T). A step picks a
free position i uniformly and proposes a new token from r(v) ∝ p_i(v) exp(g_i(v)/T), with g the
gradient of M_t at the current input with respect to its one-hot encoding; acceptance uses the
reverse proposal computed from the gradient at the proposed input. With samples from q,

    Ẑ = 1 / mean_q(e^{−M_t/T}),   p̂ = mean_q(1[argmax = t] Ẑ e^{−M_t/T}).

Every step costs a forward and a backward pass per chain; burn-in steps are counted.
"""

from __future__ import annotations

import math

import torch

from tailscope.lowprob.distributions import InputDistribution
from tailscope.lowprob.lm import LowProbModel
from tailscope.lowprob.result import LowProbEstimate

__all__ = ["MHChain", "mhis", "run_chains"]


class MHChain:
    """The state of a batch of chains and one MH step (kept separate to test the stationary law)."""

    def __init__(self, lm: LowProbModel, dist: InputDistribution, target: int, temperature: float,
                 x: torch.Tensor, generator: torch.Generator) -> None:
        self.lm, self.target, self.temperature, self.gen = lm, target, temperature, generator
        self.log_p_table = dist.with_vocab(lm.input_vocab_size).probs.log()  # (k, V)
        self.free = torch.tensor(dist.free_positions)
        if len(self.free) == 0:
            raise ValueError(f"distribution {dist.name!r} has no free position to walk over")
        self.x = x.clone()
        out = lm.target_grad(self.x, target)
        self.value, self.argmax, self.grad = out.target_logit, out.argmax, out.grad
        self.accepted = 0
        self.proposed = 0

    def _log_proposal(self, grad: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """log r(·) at position pos for each chain, (n, V)."""
        rows = torch.arange(len(pos))
        logits = self.log_p_table[pos] + grad[rows, pos].to(torch.float64) / self.temperature
        return torch.log_softmax(logits, dim=1)

    def step(self) -> None:
        n = len(self.x)
        rows = torch.arange(n)
        pos = self.free[torch.randint(len(self.free), (n,), generator=self.gen)]
        log_r = self._log_proposal(self.grad, pos)
        new_tok = torch.multinomial(log_r.exp(), 1, generator=self.gen).squeeze(1)
        old_tok = self.x[rows, pos]
        x_new = self.x.clone()
        x_new[rows, pos] = new_tok
        out = self.lm.target_grad(x_new, self.target)
        log_r_rev = self._log_proposal(out.grad, pos)
        log_ratio = (self.log_p_table[pos, new_tok] - self.log_p_table[pos, old_tok]
                     + (out.target_logit - self.value) / self.temperature
                     + log_r_rev[rows, old_tok] - log_r[rows, new_tok])
        accept = torch.rand(n, generator=self.gen, dtype=torch.float64).log() < log_ratio
        self.x[accept] = x_new[accept]
        self.value = torch.where(accept, out.target_logit, self.value)
        self.argmax = torch.where(accept, out.argmax, self.argmax)
        self.grad[accept] = out.grad[accept]
        self.accepted += int(accept.sum())
        self.proposed += n


def run_chains(lm: LowProbModel, dist: InputDistribution, target: int, *, chains: int, steps: int,
               burn_in: int, temperature: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Run ``chains`` chains for ``steps`` steps; return the kept inputs, M_t, argmax and acceptance rate."""
    gen = torch.Generator().manual_seed(seed)
    chain = MHChain(lm, dist, target, temperature, dist.sample(chains, gen), gen)
    xs, values, argmaxes = [], [], []
    for step in range(steps):
        chain.step()
        if step >= burn_in:
            xs.append(chain.x.clone())
            values.append(chain.value.clone())
            argmaxes.append(chain.argmax.clone())
    acceptance = chain.accepted / max(chain.proposed, 1)
    return torch.cat(xs), torch.cat(values), torch.cat(argmaxes), acceptance


def mhis(lm: LowProbModel, dist: InputDistribution, target: int, budget: int, *, seed: int = 0,
         temperature: float = 1.0, chains: int | None = None, burn_in_fraction: float = 0.25) -> LowProbEstimate:
    """Estimate P(argmax = target) with ``budget`` calls.

    Args:
        lm: the model.
        dist: the input distribution D.
        target: target token id.
        budget: model calls allowed: 2 per chain for the start, then 2 per chain per step.
        seed: seed of the chains' generator.
        temperature: T of the tilted target p(x) exp(M_t(x)/T).
        chains: chains run in parallel (one batch); by default budget // 128 within [8, 64], which
            leaves every chain at least 63 steps when the budget allows.
        burn_in_fraction: share of the steps discarded (still paid for).
    """
    if temperature <= 0:
        raise ValueError(f"`temperature` (={temperature}) has to be a strictly positive float")
    if not 0 <= burn_in_fraction < 1:
        raise ValueError(f"`burn_in_fraction` (={burn_in_fraction}) must lie in [0, 1)")
    if chains is None:
        chains = max(8, min(64, budget // 128))
    steps = budget // (2 * chains) - 1
    if steps < 1:
        raise ValueError(f"`budget` (={budget}) is too small for {chains} chains: need at least {4 * chains} calls")
    burn_in = int(steps * burn_in_fraction)
    _, values, argmaxes, acceptance = run_chains(lm, dist, target, chains=chains, steps=steps, burn_in=burn_in,
                                                 temperature=temperature, seed=seed)
    neg = -values / temperature
    hit = argmaxes == target
    log_den = torch.logsumexp(neg, 0)
    log_num = torch.logsumexp(neg[hit], 0) if hit.any() else torch.tensor(-math.inf)
    return LowProbEstimate.from_log("mhis", target, float(log_num - log_den), calls=2 * chains * (steps + 1),
                                    budget=budget, seed=seed,
                                    diagnostics={"hits": int(hit.sum()), "samples": len(values),
                                                 "acceptance": acceptance, "chains": chains, "steps": steps,
                                                 "burn_in": burn_in, "temperature": temperature})
