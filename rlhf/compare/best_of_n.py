"""Best-of-n sampling as a compared arm: pure functions over the proxy's scores of sampled candidates.

For each prompt (and each of compare's samples per prompt) a model samples ``m`` candidates; the best-of-n reply is
the candidate the proxy scores highest among the first ``n`` (Nakano et al. 2021, "WebGPT"; Gao et al. 2022,
"Scaling Laws for Reward Model Overoptimization", sec. 2). The arms with smaller ``n`` reuse the first candidates of
the largest one, so every arm's candidates come from one sampling pass.

KL of best-of-n to the model it samples from, per prompt: best-of-n chooses among outcomes by reward alone, so on the
model's own distribution its probability of an outcome with reward ``v`` is ``F(v)^n - F(v-)^n``, where ``F`` is the
reward's CDF under the model (ties broken uniformly, as choosing the first of equal candidates does). The *measured*
KL takes ``F`` from the ``m`` sampled candidates (equal rewards one outcome). The *analytic* value ``log n - (n - 1) /
n`` (Stiennon et al. 2020, appendix G.3; Gao et al. 2022, eq. 1) is its limit for distinct rewards and many candidates,
and an upper bound on it (Beirami et al. 2024, "Theoretical guarantees on the best-of-n alignment policy", thm. 1):
the measured value falls below it when rewards tie (e.g. a model that often writes the same reply).

No I/O, no configuration: numpy arrays in, numbers out.
"""

from __future__ import annotations

import math

import numpy as np


def kl_bound(n: int) -> float:
    """``log n - (n - 1) / n``: the KL of best-of-n to its sampling model for continuous rewards (an upper bound).

    Args:
        n: Candidates per reply (>= 1).

    Returns:
        The bound in nats (0 for n = 1).
    """
    return math.log(n) - (n - 1) / n


def choose(rewards: np.ndarray, n: int) -> np.ndarray:
    """Index of the best of the first ``n`` candidates of each row (the first of equal best ones).

    Args:
        rewards: ``[G, m]`` proxy scores, one row per (prompt, sample) and one column per candidate, in sampling order.
        n: Candidates considered (``1 <= n <= m``).

    Returns:
        ``[G]`` column indices into ``rewards``.
    """
    if not 1 <= n <= rewards.shape[1]:
        raise ValueError(f"best-of-{n} needs 1 <= n <= {rewards.shape[1]} candidates")
    return np.argmax(rewards[:, :n], axis=1)  # argmax returns the first maximum


def measured_kl(rewards: np.ndarray, n: int) -> np.ndarray:
    """KL of best-of-n to its sampling model, per row, on the empirical reward distribution of the row's candidates.

    ``sum_v P_n(v) log(P_n(v) / P(v))`` over the distinct rewards ``v`` of the row's ``m`` candidates, with
    ``P(v) = F(v) - F(v-)`` the fraction of candidates scoring ``v`` and ``P_n(v) = F(v)^n - F(v-)^n``.

    Args:
        rewards: ``[G, m]`` proxy scores of the candidates.
        n: Candidates per reply.

    Returns:
        ``[G]`` KL in nats; 0 where every candidate scores the same, at most ``kl_bound(n)``.
    """
    m = rewards.shape[1]
    out = np.zeros(rewards.shape[0])
    for row, values in enumerate(rewards):
        _, counts = np.unique(values, return_counts=True)  # ascending rewards, ties merged
        upper = np.cumsum(counts) / m  # F(v)
        lower = upper - counts / m  # F(v-)
        p_base = counts / m
        p_best = upper**n - lower**n
        kept = p_best > 0
        # A KL is never negative; the clamp removes float rounding of F(v) - F(v-) (e.g. -7e-17 for n = 1).
        out[row] = max(0.0, float(np.sum(p_best[kept] * np.log(p_best[kept] / p_base[kept]))))
    return out
