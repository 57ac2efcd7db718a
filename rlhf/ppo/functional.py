"""PPO maths as pure tensor functions.

Conventions shared by every function here:

* Per-token tensors are ``[batch, T]`` over RESPONSE tokens only (the prompt is not included).
* ``mask`` is a float or bool tensor ``[batch, T]``: 1 for real response tokens (the EOS token included), 0 for
  padding and anything after EOS. A row may be all padding; nothing here returns NaN for it.
* Values at masked positions are never read: they may hold garbage (even NaN or inf) without changing any result or
  gradient. Masked positions of per-token outputs are 0.

Nothing here does I/O, reads configuration or knows about distributed training; a distributed caller reduces
statistics itself and passes them in (see ``masked_whiten``).
"""

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")


def _as_bool(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Sum of ``x`` over positions where ``mask`` is 1.

    Masked positions are selected out (not multiplied by 0), so NaN or inf there does not leak into the sum. Source:
    the masked reductions of OpenAI's lm-human-preferences and TRL (``trl.core.masked_mean``).

    Args:
        x: Values, any shape.
        mask: Same shape as ``x``; 1 (or True) where the value counts.
        dim: Dimension(s) to reduce; ``None`` reduces everything to a 0-dim tensor.

    Returns:
        The masked sum, reduced over ``dim``.
    """
    selected = torch.where(_as_bool(mask), x, 0)
    return selected.sum() if dim is None else selected.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1; 0 where the mask is empty (never NaN).

    Source: as ``masked_sum``. An empty selection returns 0 rather than dividing by zero so that an all-padding row
    (or minibatch) contributes nothing and keeps gradients finite.

    Args:
        x: Values, any shape.
        mask: Same shape as ``x``; 1 (or True) where the value counts.
        dim: Dimension(s) to reduce; ``None`` reduces everything to a 0-dim tensor.

    Returns:
        The masked mean, reduced over ``dim``.
    """
    count = masked_sum(torch.ones_like(x), mask, dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over all positions where ``mask`` is 1.

    With ``unbiased`` the sum of squared deviations is divided by ``count - 1`` (Bessel's correction) when
    ``count > 1``; a single element or an empty mask gives 0. Source: TRL ``trl.core.masked_var`` (which raises on
    those cases instead).

    Args:
        x: Values, any shape.
        mask: Same shape as ``x``; 1 (or True) where the value counts.
        unbiased: Apply Bessel's correction.

    Returns:
        A 0-dim tensor.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        count = masked_sum(torch.ones_like(x), mask)
        var = var * torch.where(count > 1, count / (count - 1).clamp(min=1), 1.0)
    return var


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    mean: torch.Tensor | float | None = None,
    var: torch.Tensor | float | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Normalise ``x`` to zero mean and unit variance over real tokens.

    Used for advantage normalisation (Huang et al. 2022, "The 37 Implementation Details of Proximal Policy
    Optimization", detail 7) and for whitening rewards, as lm-human-preferences and TRL do (Ziegler et al. 2019,
    "Fine-Tuning Language Models from Human Preferences", sec. 2.2, normalise the reward model to mean 0 and
    variance 1). ``var`` defaults to the unbiased ``masked_var``.

    Args:
        x: Values ``[batch, T]``.
        mask: ``[batch, T]``, 1 for real tokens.
        shift_mean: If True the result has mean 0. If False the original mean is added back after scaling, so only
            the spread is normalised (the convention of lm-human-preferences and TRL).
        mean: Precomputed mean, e.g. all-reduced across processes; computed from ``x`` and ``mask`` if None.
        var: Precomputed variance, likewise.
        eps: Added to the variance before the reciprocal square root.

    Returns:
        Whitened values ``[batch, T]``, zero at masked positions.
    """
    mask = _as_bool(mask)
    if mean is None:
        mean = masked_mean(x, mask)
    if var is None:
        var = masked_var(x, mask)
    var = torch.as_tensor(var, dtype=x.dtype, device=x.device)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, 0)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each label under the softmax of ``logits``: ``log pi(y_t | x, y_<t)``.

    The per-token log-likelihood that the PPO ratio (Schulman et al. 2017, "Proximal Policy Optimization
    Algorithms", eq. 6) and the KL penalty (Ziegler et al. 2019, eq. 2) are built from. Computed as
    ``logits[label] - logsumexp(logits)``, so no full ``[batch, T, V]`` log-softmax copy is
    made. Half-precision logits are upcast to float32 per row *before* the division by the temperature, as the
    sampler does (`rlhf.generation.sampling`): bf16 log-probabilities, or a bf16 division, are too coarse for
    importance ratios near 1 (a bf16 ``logits / 0.7`` moved log-probs by up to 0.12 nats per token).

    Args:
        logits: ``[batch, T, V]``, already aligned so that ``logits[:, t]`` predicts ``labels[:, t]``, not yet divided
            by the temperature.
        labels: ``[batch, T]`` token ids.
        temperature: The sampling temperature the logits are divided by (after the upcast).

    Returns:
        ``[batch, T]`` log-probabilities, float32 (or float64 for float64 logits).
    """
    if logits.dtype == torch.promote_types(logits.dtype, torch.float32):
        # Already float32/64: one vectorised call; gather and logsumexp allocate only [batch, T].
        if temperature != 1.0:
            logits = logits / temperature
        return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    rows = []
    for row_logits, row_labels in zip(logits, labels, strict=True):
        row = row_logits.to(torch.float32) / temperature
        label_logits = row.gather(-1, row_labels.unsqueeze(-1)).squeeze(-1)
        rows.append(label_logits - torch.logsumexp(row, dim=-1))
    return torch.stack(rows)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax distribution of ``logits`` at every position.

    ``H = logsumexp(z) - sum_i softmax(z)_i * z_i``, the entropy bonus S of Schulman et al. 2017, eq. 9. Computed one
    batch row at a time in at least float32, like ``logprobs_from_logits``. Logits must be finite (a -inf logit gives
    ``0 * -inf``).

    Args:
        logits: ``[batch, T, V]``.

    Returns:
        ``[batch, T]`` entropies in nats.
    """
    rows = []
    for row_logits in logits:
        row = row_logits.to(torch.promote_types(row_logits.dtype, torch.float32))
        probs = torch.softmax(row, dim=-1)
        rows.append(torch.logsumexp(row, dim=-1) - (probs * row).sum(dim=-1))
    return torch.stack(rows)


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || ref) for tokens sampled from the policy.

    With ``log_r = ref_logprobs - logprobs`` (John Schulman, "Approximating KL Divergence", 2020,
    http://joschu.net/blog/kl-approx.html):

    * ``"k1"``: ``-log_r``. Unbiased, high variance, negative on some tokens. The per-token penalty of Ziegler et al.
      2019, eq. 2 and Ouyang et al. 2022 ("Training language models to follow instructions with human feedback",
      eq. 2).
    * ``"k2"``: ``0.5 * log_r ** 2``. Biased, low variance, non-negative.
    * ``"k3"``: ``exp(log_r) - log_r - 1``. Unbiased, low variance, non-negative.

    Args:
        logprobs: ``[batch, T]`` log-probabilities of the sampled tokens under the policy.
        ref_logprobs: ``[batch, T]`` log-probabilities of the same tokens under the reference policy.
        estimator: One of ``KL_ESTIMATORS``.

    Returns:
        ``[batch, T]`` per-token estimates (unmasked).

    Raises:
        ValueError: If ``estimator`` is not one of ``KL_ESTIMATORS``.
    """
    log_r = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    if estimator == "k3":
        return torch.exp(log_r) - log_r - 1
    raise ValueError(f"unknown KL estimator {estimator!r}; valid estimators are {', '.join(KL_ESTIMATORS)}")


def kl_penalized_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: a KL penalty at every response token plus the sequence score at the last one.

    ``R(x, y) = r(x, y) - beta * KL`` (Ziegler et al. 2019, sec. 2.2, eq. 2; Ouyang et al. 2022, eq. 2), spread over
    tokens as in lm-human-preferences and TRL: token t gets ``-beta * kl_t`` and the last real token also gets the
    score.

    Args:
        scores: ``[batch]`` reward-model scores, one per response.
        logprobs: ``[batch, T]`` policy log-probabilities of the sampled tokens.
        ref_logprobs: ``[batch, T]`` reference log-probabilities of the same tokens.
        mask: ``[batch, T]``, 1 for real response tokens.
        kl_coef: The KL coefficient beta.
        estimator: KL estimator, see ``kl_estimate``.

    Returns:
        ``(rewards, kl)``, both ``[batch, T]`` and zero at masked positions. The score lands at the last position
        where ``mask`` is 1; a row with an empty mask gets no score and all-zero rewards.
    """
    mask = _as_bool(mask)
    kl = torch.where(mask, kl_estimate(logprobs, ref_logprobs, estimator), 0)
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask, positions, -1).amax(dim=1)  # -1 for an empty row: matches no position
    at_last = positions.unsqueeze(0) == last.unsqueeze(1)
    score_per_token = torch.where(at_last, scores.to(kl.dtype).unsqueeze(1), 0)
    return -kl_coef * kl + score_per_token, kl


def gae_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens.

    ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)`` and ``A_t = delta_t + gamma * lam * A_{t+1}`` (Schulman et al.
    2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation", eq. 16; the truncated form
    is Schulman et al. 2017, eqs. 11-12). The episode ends after the last real token, so the value and advantage
    after it are 0. Masked positions are skipped rather than treated as episode ends: the recursion carries over
    them, which gives the same result for trailing padding and treats interior masked tokens as not being steps.

    Args:
        rewards: ``[batch, T]`` per-token rewards (e.g. from ``kl_penalized_rewards``).
        values: ``[batch, T]`` value estimates V(s_t).
        mask: ``[batch, T]``, 1 for real response tokens.
        gamma: Discount factor.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, both ``[batch, T]``; ``returns = advantages + values`` on real tokens. Both are 0 at
        masked positions.
    """
    mask = _as_bool(mask)
    rewards = torch.where(mask, rewards, 0)
    values = torch.where(mask, values, 0)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    advantages = [next_advantage] * values.shape[1]
    for t in reversed(range(values.shape[1])):
        real = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[t] = torch.where(real, advantage, 0)
        next_value = torch.where(real, values[:, t], next_value)
        next_advantage = torch.where(real, advantage, next_advantage)
    advantages = torch.stack(advantages, dim=1)
    return advantages, torch.where(mask, advantages + values, 0)


def _token_mean(x: torch.Tensor, mask: torch.Tensor, token_count: torch.Tensor | float | None) -> torch.Tensor:
    """The masked mean of ``x``, or its masked sum over ``token_count`` tokens counted elsewhere."""
    return masked_mean(x, mask) if token_count is None else masked_sum(x, mask) / token_count


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    token_count: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate loss (to minimise).

    ``L = -E_t[min(ratio_t * A_t, clip(ratio_t, 1 - eps, 1 + eps) * A_t)]`` (Schulman et al. 2017, eq. 7), written as
    the masked mean over all real tokens of ``max(-A * ratio, -A * clip(ratio))`` (token-level averaging, as in
    lm-human-preferences and TRL).

    Args:
        logprobs: ``[batch, T]`` log-probabilities under the policy being optimised (carries the gradient).
        old_logprobs: ``[batch, T]`` log-probabilities under the policy that sampled the tokens.
        advantages: ``[batch, T]`` advantage estimates.
        mask: ``[batch, T]``, 1 for real response tokens.
        cliprange: Clip epsilon.
        token_count: Divide the summed loss by this instead of by the real tokens of this batch: the real tokens of
            the whole minibatch when this batch is one of several accumulated micro-batches, so the accumulated
            gradient is the token mean over the minibatch (None: the token mean over this batch).

    Returns:
        ``(loss, stats)``: a 0-dim loss and detached 0-dim statistics over real tokens: ``clipfrac`` (fraction where
        the clipped term was the active one), ``approx_kl`` (mean ``0.5 * (logp - old_logp) ** 2``, the k2
        estimator) and ``approx_kl_k3`` (mean k3 estimate of KL(old || new); see ``kl_estimate``).
    """
    mask = _as_bool(mask)
    # Zero masked inputs before exp() and products so garbage there cannot turn zero gradients into NaN.
    log_ratio = torch.where(mask, logprobs - old_logprobs, 0)
    advantages = torch.where(mask, advantages, 0)
    ratio = torch.exp(log_ratio)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = _token_mean(torch.maximum(pg_losses1, pg_losses2), mask, token_count)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_losses2 > pg_losses1).to(ratio.dtype), mask),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask),
            # Tokens were sampled from the old policy, so the k3 "log_r" is logp - old_logp = log_ratio.
            "approx_kl_k3": masked_mean(kl_estimate(torch.zeros_like(log_ratio), log_ratio, "k3"), mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float | None,
    token_count: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped squared-error value loss.

    ``0.5 * E_t[max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2)]``: the squared error of Schulman et al.
    2017, eq. 9, with the value clipping of OpenAI baselines' ppo2 (Huang et al. 2022, "The 37 Implementation
    Details of Proximal Policy Optimization", detail 9), as used by lm-human-preferences.

    Args:
        values: ``[batch, T]`` current value predictions (carries the gradient).
        old_values: ``[batch, T]`` value predictions made at rollout time.
        returns: ``[batch, T]`` value targets (e.g. from ``gae_advantages``).
        mask: ``[batch, T]``, 1 for real response tokens.
        cliprange_value: Clip epsilon around ``old_values``; ``None`` means unclipped.
        token_count: As in ``policy_loss``: the minibatch's real tokens when accumulating micro-batches.

    Returns:
        ``(loss, stats)``: a 0-dim loss and detached 0-dim ``clipfrac`` (fraction of real tokens where the clipped
        error was the larger one; 0 when unclipped).
    """
    mask = _as_bool(mask)
    values = torch.where(mask, values, 0)
    old_values = torch.where(mask, old_values, 0)
    returns = torch.where(mask, returns, 0)
    vf_losses1 = (values - returns) ** 2
    if cliprange_value is None:
        loss = 0.5 * _token_mean(vf_losses1, mask, token_count)
        return loss, {"clipfrac": torch.zeros((), dtype=loss.dtype, device=loss.device)}
    values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf_losses2 = (values_clipped - returns) ** 2
    loss = 0.5 * _token_mean(torch.maximum(vf_losses1, vf_losses2), mask, token_count)
    with torch.no_grad():
        clipfrac = masked_mean((vf_losses2 > vf_losses1).to(vf_losses1.dtype), mask)
    return loss, {"clipfrac": clipfrac}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fraction of the variance of the returns that the value predictions explain, over real tokens.

    ``1 - Var(R - V) / Var(R)`` (OpenAI baselines ``explained_variance``, reported by lm-human-preferences and TRL).
    1 is a perfect value function, 0 is no better than predicting the mean, negative is worse. When ``Var(R)`` is 0
    (constant returns, one token, or an empty mask) the ratio is undefined and 0 is returned, so that a tracker
    never receives NaN; read 0 there as "no information".

    Args:
        values: ``[batch, T]`` value predictions.
        returns: ``[batch, T]`` value targets.
        mask: ``[batch, T]``, 1 for real response tokens.

    Returns:
        A detached 0-dim tensor.
    """
    values, returns = values.detach(), returns.detach()
    var_returns = masked_var(returns, mask, unbiased=False)
    var_residual = masked_var(returns - values, mask, unbiased=False)
    ratio = var_residual / torch.where(var_returns > 0, var_returns, 1.0)
    return torch.where(var_returns > 0, 1.0 - ratio, 0.0)


class FixedKLController:
    """A constant KL coefficient (Ziegler et al. 2019, sec. 2.2, with a fixed beta).

    Attributes:
        value: The KL coefficient beta.
    """

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Does nothing; present so both controllers share one interface."""

    def state_dict(self) -> dict[str, float]:
        """Returns the coefficient, for checkpoints."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restores the coefficient saved by ``state_dict``."""
        self.value = float(state["value"])


class AdaptiveKLController:
    """KL coefficient adapted towards a target KL (Ziegler et al. 2019, sec. 2.2).

    After each batch: ``e = clip(KL / target - 1, -0.2, 0.2)`` and ``beta *= 1 + e * n_steps / horizon``, where
    ``n_steps / horizon`` plays the role of the paper's gain K_beta. This is the form of lm-human-preferences'
    ``AdaptiveKLController``. (The PPO paper's adaptive penalty, Schulman et al. 2017 sec. 4, is a different rule.)

    Attributes:
        value: The current KL coefficient beta.
        target: Target KL per response (nats).
        horizon: Number of samples over which an error held at the +-20% clip changes beta by a factor of about
            ``exp(+-0.2)``.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be positive, got target={target}, horizon={horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Moves the coefficient towards keeping ``current_kl`` at the target.

        Args:
            current_kl: The KL measured on the latest batch (mean over responses).
            n_steps: Number of samples (responses) in that batch.
        """
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        """Returns the current coefficient, the only state that changes; target and horizon come from the config."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restores the coefficient saved by ``state_dict``."""
        self.value = float(state["value"])


def missing_eos_penalty(scores: torch.Tensor, has_eos: torch.Tensor, penalty: float) -> torch.Tensor:
    """Subtracts ``penalty`` from the score of every response that never emitted EOS.

    Discourages truncated responses, which the reward model may otherwise score well (Huang et al. 2024, "The N+
    Implementation Details of RLHF with PPO: A Case Study on TL;DR Summarization", which replaces such scores by a
    constant; TRL's ``missing_eos_penalty``, which subtracts, as here).

    Args:
        scores: ``[batch]`` reward-model scores.
        has_eos: ``[batch]`` bool, True where the response contains EOS.
        penalty: Amount subtracted where ``has_eos`` is False.

    Returns:
        ``[batch]`` penalised scores.
    """
    return torch.where(has_eos.bool(), scores, scores - penalty)
