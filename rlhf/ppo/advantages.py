"""Advantage estimators for the ppo stage, as pure tensor functions: GAE with a critic, and three without one.

* ``gae``: generalised advantage estimation from a learned value function (``functional.gae_advantages``).
* ``grpo``: the reward of each response minus its group's mean, divided by the group's standard deviation (Shao et
  al. 2024, "DeepSeekMath", sec. 4.1.2, outcome supervision).
* ``rloo``: the reward of each response minus the mean reward of the other responses to the same prompt (Kool et
  al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!"; Ahmadian et al. 2024, "Back to Basics: Revisiting
  REINFORCE Style Optimization for Learning from Human Feedback in LLMs", eq. 6).
* ``reinforce_pp``: per-token rewards with the KL penalty in them, summed to go, then whitened over the whole batch
  (Hu 2025, "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language Models", sec. 3).

A *group* is the ``group_size`` responses sampled for one prompt; they sit in consecutive rows, so row ``i`` belongs
to group ``i // group_size`` and the batch size is a multiple of ``group_size``.

The conventions of ``functional`` hold here: per-token tensors are ``[batch, T]`` over response tokens, ``mask`` is 1
on real response tokens (EOS included) and 0 on padding; values at masked positions are never read and masked
outputs are 0. A response that never ends (no EOS) simply has a mask that is 1 up to the last position. Nothing
here does I/O, reads configuration or knows about distributed training: a distributed caller passes the batch-wide
statistics in (``moments``).
"""

from collections.abc import Callable

import torch

from rlhf.ppo.functional import gae_advantages, kl_estimate, masked_mean, masked_sum, masked_var, masked_whiten

ESTIMATORS = ("gae", "grpo", "rloo", "reinforce_pp")
CRITIC_FREE = ("grpo", "rloo", "reinforce_pp")
GROUP_BASELINES = ("grpo", "rloo")
"""Estimators whose baseline is the other responses to the same prompt: they need several samples per prompt."""

GRPO_EPS = 1e-6
"""Added to the group standard deviation; groups whose rewards are all equal get 0 whatever it is."""

Moments = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``(x, mask) -> (mean, variance)`` of ``x`` over the real tokens of the whole batch (every rank's)."""

__all__ = [
    "CRITIC_FREE",
    "ESTIMATORS",
    "GROUP_BASELINES",
    "gae_advantages",
    "grpo_advantages",
    "kl_loss",
    "reinforce_pp_advantages",
    "returns_to_go",
    "rloo_advantages",
    "sequence_rewards",
    "to_tokens",
]


def sequence_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """One reward per response: the score minus ``kl_coef`` times the response's summed per-token KL.

    ``r(x, y) - beta * sum_t kl_t``, the KL-regularised sequence reward that RLOO optimises (Ahmadian et al. 2024,
    sec. 3; TRL's ``RLOOTrainer``) and that GRPO uses when the KL sits in the reward instead of in the loss. Pass
    ``kl_coef=0`` for the bare score.

    Args:
        scores: ``[batch]`` scores, one per response.
        kl: ``[batch, T]`` per-token KL estimates (``functional.kl_estimate``).
        mask: ``[batch, T]``, 1 for real response tokens.
        kl_coef: The KL coefficient beta.

    Returns:
        ``[batch]`` rewards, in the dtype of ``kl``.
    """
    return scores.to(kl.dtype) - kl_coef * masked_sum(kl, mask, dim=1)


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 1 or rewards.shape[0] % group_size:
        raise ValueError(f"a batch of {rewards.shape[0]} responses does not split into groups of {group_size}")
    return rewards.reshape(-1, group_size)


def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = GRPO_EPS) -> torch.Tensor:
    """Group-normalised advantages: ``(r_i - mean(r_group)) / (std(r_group) + eps)``.

    Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
    sec. 4.1.2 (outcome supervision: every token of response i gets this advantage). The standard deviation is the
    unbiased one (Bessel's correction), as in TRL's ``GRPOTrainer`` and OpenRLHF. A group whose rewards are all equal
    (or a group of one) carries no signal about which response is better: its advantages are exactly 0 rather than
    ``0 / eps`` rounding noise.

    Args:
        rewards: ``[batch]`` sequence rewards, groups in consecutive rows.
        group_size: Responses per prompt.
        eps: Added to the standard deviation.

    Returns:
        ``[batch]`` advantages.

    Raises:
        ValueError: If the batch does not split into groups of ``group_size``.
    """
    groups = _groups(rewards, group_size)
    if group_size == 1:
        return torch.zeros_like(rewards)
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, keepdim=True)
    # max == min, not std == 0: the mean of equal floats can round so that r - mean is a tiny non-zero number.
    flat = groups.amax(dim=1, keepdim=True) == groups.amin(dim=1, keepdim=True)
    return torch.where(flat, 0.0, (groups - mean) / (std + eps)).reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Leave-one-out advantages: ``r_i - mean_{j != i} r_j`` within each group.

    Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!"; Ahmadian et al. 2024, eq. 6. Each
    response's baseline is the mean of the other ``k - 1`` responses to its prompt, so it is independent of the
    response itself and the gradient stays unbiased. Equal to ``k / (k - 1) * (r_i - mean(r_group))``. A group of
    one has no other responses: its advantage is 0.

    Args:
        rewards: ``[batch]`` sequence rewards, groups in consecutive rows.
        group_size: Responses per prompt.

    Returns:
        ``[batch]`` advantages.

    Raises:
        ValueError: If the batch does not split into groups of ``group_size``.
    """
    groups = _groups(rewards, group_size)
    if group_size == 1:
        return torch.zeros_like(rewards)
    others = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others).reshape(-1)


def to_tokens(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Spreads one advantage per response over its real tokens (0 on padding).

    Args:
        advantages: ``[batch]``.
        mask: ``[batch, T]``, 1 for real response tokens.

    Returns:
        ``[batch, T]``.
    """
    mask = mask if mask.dtype == torch.bool else mask != 0
    return torch.where(mask, advantages.unsqueeze(1), 0).to(advantages.dtype)


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted sum of the rewards from each token to the end of its response: ``G_t = sum_{s>=t} gamma^(s-t) r_s``.

    The Monte-Carlo return of REINFORCE (Williams 1992); equal to ``gae_advantages`` with ``lam = 1`` and zero values.
    Like GAE, masked positions are skipped rather than treated as episode ends.

    Args:
        rewards: ``[batch, T]`` per-token rewards (e.g. from ``functional.kl_penalized_rewards``).
        mask: ``[batch, T]``, 1 for real response tokens.
        gamma: Discount factor.

    Returns:
        ``[batch, T]`` returns, 0 at masked positions.
    """
    mask = mask if mask.dtype == torch.bool else mask != 0
    rewards = torch.where(mask, rewards, 0)
    running = torch.zeros_like(rewards[:, 0])
    returns = [running] * rewards.shape[1]
    for t in reversed(range(rewards.shape[1])):
        real = mask[:, t]
        running = torch.where(real, rewards[:, t] + gamma * running, running)
        returns[t] = torch.where(real, running, 0)
    return torch.stack(returns, dim=1)


def _local_moments(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return masked_mean(x, mask), masked_var(x, mask)


def reinforce_pp_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, gamma: float, moments: Moments | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ advantages: per-token returns to go, whitened with the whole batch's mean and variance.

    Hu 2025, "REINFORCE++", sec. 3: the KL penalty is a per-token reward (as in PPO), there is no critic, and the
    returns are normalised over the global batch instead of by a per-prompt baseline, which keeps the estimator
    stable with one sample per prompt.

    Args:
        rewards: ``[batch, T]`` per-token rewards (``functional.kl_penalized_rewards``).
        mask: ``[batch, T]``, 1 for real response tokens.
        gamma: Discount factor.
        moments: Mean and unbiased variance of the returns over the whole batch (every rank's tokens); default:
            this batch's own.

    Returns:
        ``(advantages, returns)``, both ``[batch, T]`` and 0 at masked positions.
    """
    returns = returns_to_go(rewards, mask, gamma)
    mean, var = (moments or _local_moments)(returns, mask)
    return masked_whiten(returns, mask, mean=mean, var=var), returns


def kl_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    estimator: str,
    token_count: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """The KL to the reference as a loss term: the mean per-token estimate over real tokens.

    GRPO puts the KL in the loss rather than in the reward, with the k3 estimator (Shao et al. 2024, eq. 3-4:
    ``pi_ref / pi - log(pi_ref / pi) - 1``); ``k1`` is ``log pi - log pi_ref``. The gradient flows through
    ``logprobs`` (the policy being optimised).

    Args:
        logprobs: ``[batch, T]`` log-probabilities under the policy being optimised (carries the gradient).
        ref_logprobs: ``[batch, T]`` reference log-probabilities of the same tokens.
        mask: ``[batch, T]``, 1 for real response tokens.
        estimator: ``"k1"`` or ``"k3"`` (see ``functional.kl_estimate``).
        token_count: Divide the summed estimate by this (the minibatch's real tokens when accumulating micro-batches,
            as in ``functional.policy_loss``); None: the mean over this batch's real tokens.

    Returns:
        A 0-dim loss.
    """
    mask = mask if mask.dtype == torch.bool else mask != 0
    # Zero masked inputs first: exp() of garbage there would turn the zero gradient into NaN.
    logprobs = torch.where(mask, logprobs, 0)
    ref_logprobs = torch.where(mask, ref_logprobs, 0)
    estimate = kl_estimate(logprobs, ref_logprobs, estimator)
    return masked_mean(estimate, mask) if token_count is None else masked_sum(estimate, mask) / token_count
