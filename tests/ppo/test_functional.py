"""Hand-computed checks of the PPO maths in rlhf.ppo.functional.

Every expected number is worked out in the comments next to it; nothing depends on hardware.
"""

import ast
import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from rlhf.ppo import functional as F

NAN = float("nan")
INF = float("inf")


def t(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


def test_module_imports_only_torch_and_stdlib_maths():
    tree = ast.parse(Path(F.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= {"torch", "math", "dataclasses", "__future__"}


# --- masked reductions -------------------------------------------------------------------------------------------


def test_masked_sum_and_mean():
    x = t([[1.0, 2.0, NAN], [4.0, INF, 6.0]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    # Real values 1, 2, 4: sum 7, mean 7/3. The NaN and inf sit at masked positions and must not leak.
    assert_close(F.masked_sum(x, mask), t(7.0))
    assert_close(F.masked_mean(x, mask), t(7.0 / 3.0))
    # Per row: [1 + 2, 4] and [3 / 2, 4 / 1].
    assert_close(F.masked_sum(x, mask, dim=1), t([3.0, 4.0]))
    assert_close(F.masked_mean(x, mask, dim=1), t([1.5, 4.0]))


def test_masked_mean_accepts_bool_mask():
    x = t([[1.0, 2.0, 3.0]])
    assert_close(F.masked_mean(x, torch.tensor([[True, False, True]])), t(2.0))  # (1 + 3) / 2


def test_masked_mean_of_empty_mask_is_zero_not_nan():
    x = t([[1.0, 2.0], [3.0, NAN]])
    mask = t([[0, 0], [1, 0]])
    assert_close(F.masked_mean(x, mask, dim=1), t([0.0, 3.0]))
    assert_close(F.masked_mean(x, torch.zeros_like(mask)), t(0.0))


def test_masked_mean_gradient_is_finite_for_empty_mask():
    x = t([[1.0, 2.0]]).requires_grad_()
    F.masked_mean(x, t([[0, 0]])).backward()
    assert_close(x.grad, t([[0.0, 0.0]]))


def test_masked_var():
    x = t([[1.0, 2.0, 99.0], [4.0, NAN, -7.0]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    # Real values 1, 2, 4; mean 7/3; deviations -4/3, -1/3, 5/3; squares 16/9 + 1/9 + 25/9 = 42/9.
    # Biased: 42/9 / 3 = 14/9. Unbiased: 42/9 / 2 = 7/3.
    assert_close(F.masked_var(x, mask, unbiased=False), t(14.0 / 9.0))
    assert_close(F.masked_var(x, mask), t(7.0 / 3.0))


def test_masked_var_of_one_element_and_of_empty_mask_is_zero():
    x = t([[5.0, NAN]])
    assert_close(F.masked_var(x, t([[1, 0]])), t(0.0))  # one element: no Bessel division by 0
    assert_close(F.masked_var(x, t([[0, 0]])), t(0.0))


# --- whitening ---------------------------------------------------------------------------------------------------


def test_masked_whiten_hand_values():
    x = t([[1.0, 2.0, 99.0], [4.0, NAN, -7.0]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    # mean 7/3, unbiased var 7/3 (see test_masked_var): (x - 7/3) / sqrt(7/3).
    std = math.sqrt(7.0 / 3.0)
    expected = t([[(1 - 7 / 3) / std, (2 - 7 / 3) / std, 0.0], [(4 - 7 / 3) / std, 0.0, 0.0]])
    assert_close(F.masked_whiten(x, mask), expected)


def test_masked_whiten_gives_zero_mean_unit_variance_on_real_tokens_and_zeros_elsewhere():
    torch.manual_seed(0)
    x = torch.randn(4, 7) * 3.0 + 5.0
    mask = torch.ones(4, 7)
    mask[0, 5:] = 0
    mask[2, 1:] = 0
    mask[3] = 0  # an all-padding row
    x[mask == 0] = NAN
    whitened = F.masked_whiten(x, mask)
    assert not torch.isnan(whitened).any()
    assert_close(F.masked_mean(whitened, mask), t(0.0), atol=1e-6, rtol=0)
    assert_close(F.masked_var(whitened, mask), t(1.0), atol=1e-5, rtol=0)
    assert (whitened[mask == 0] == 0).all()


def test_masked_whiten_without_mean_shift_keeps_the_mean():
    x = t([[1.0, 3.0]])
    mask = t([[1, 1]])
    # mean 2, unbiased var ((-1)^2 + 1^2) / 1 = 2: (x - 2) / sqrt(2) + 2.
    expected = t([[2 - 1 / math.sqrt(2), 2 + 1 / math.sqrt(2)]])
    assert_close(F.masked_whiten(x, mask, shift_mean=False), expected)


def test_masked_whiten_uses_precomputed_statistics():
    x = t([[1.0, 3.0, 8.0]])
    mask = t([[1, 1, 0]])
    # Given mean 1 and var 4 (e.g. reduced across processes): (x - 1) / 2 = [0, 1], padding 0.
    assert_close(F.masked_whiten(x, mask, mean=t(1.0), var=t(4.0), eps=0.0), t([[0.0, 1.0, 0.0]]))
    assert_close(F.masked_whiten(x, mask, mean=1.0, var=4.0, eps=0.0), t([[0.0, 1.0, 0.0]]))


def test_masked_whiten_of_all_padding_is_zero():
    x = t([[NAN, 1.0]])
    assert_close(F.masked_whiten(x, t([[0, 0]])), t([[0.0, 0.0]]))


# --- log-probabilities and entropy -------------------------------------------------------------------------------


def test_logprobs_from_logits_hand_value():
    # logits [0, ln 3]: softmax = [1/4, 3/4].
    logits = t([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])
    labels = torch.tensor([[1, 0]])
    assert_close(F.logprobs_from_logits(logits, labels), t([[math.log(0.75), math.log(0.25)]]))


def test_logprobs_from_logits_matches_log_softmax_gather_with_gradients():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    labels = torch.randint(0, 11, (3, 5))
    ours = F.logprobs_from_logits(logits, labels)
    (ours_grad,) = torch.autograd.grad(ours.sum(), logits)
    reference = torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    (reference_grad,) = torch.autograd.grad(reference.sum(), logits)
    assert_close(ours, reference)
    assert_close(ours_grad, reference_grad)


def test_logprobs_from_bf16_logits_are_float32():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7).to(torch.bfloat16)
    labels = torch.randint(0, 7, (2, 4))
    ours = F.logprobs_from_logits(logits, labels)
    assert ours.dtype == torch.float32
    reference = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    assert_close(ours, reference)


def test_entropy_of_uniform_logits_is_log_vocab_size():
    logits = torch.full((2, 3, 5), 0.7)
    assert_close(F.entropy_from_logits(logits), torch.full((2, 3), math.log(5.0)))


def test_entropy_hand_value():
    # softmax [1/4, 3/4]: H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.25 ln 4 + 0.75 ln(4/3).
    logits = t([[[0.0, math.log(3.0)]]])
    assert_close(F.entropy_from_logits(logits), t([[0.25 * math.log(4.0) + 0.75 * math.log(4.0 / 3.0)]]))


def test_entropy_of_a_certain_distribution_is_zero():
    logits = t([[[0.0, 100.0, 0.0]]])  # p = [~0, ~1, ~0], e^-100 is negligible in float32
    assert_close(F.entropy_from_logits(logits), t([[0.0]]), atol=1e-6, rtol=0)


# --- KL estimators -----------------------------------------------------------------------------------------------


def test_kl_estimators_hand_values():
    # Token 0: p = 1/2, ref = 1/4, so logp - ref = ln 2 and log_r = ref - logp = -ln 2.
    # Token 1: p = 1/4, ref = 1/2, so logp - ref = -ln 2 and log_r = ln 2.
    ln2 = math.log(2.0)
    logprobs = t([[math.log(0.5), math.log(0.25)]])
    ref_logprobs = t([[math.log(0.25), math.log(0.5)]])
    # k1 = logp - ref.
    assert_close(F.kl_estimate(logprobs, ref_logprobs, "k1"), t([[ln2, -ln2]]))
    assert_close(F.kl_estimate(logprobs, ref_logprobs), t([[ln2, -ln2]]))  # k1 is the default
    # k2 = 0.5 * (ln 2)^2 for both.
    assert_close(F.kl_estimate(logprobs, ref_logprobs, "k2"), t([[0.5 * ln2**2, 0.5 * ln2**2]]))
    # k3 = exp(log_r) - log_r - 1: token 0: 1/2 + ln 2 - 1 = ln 2 - 1/2; token 1: 2 - ln 2 - 1 = 1 - ln 2.
    assert_close(F.kl_estimate(logprobs, ref_logprobs, "k3"), t([[ln2 - 0.5, 1.0 - ln2]]))


def test_k3_is_non_negative_and_zero_when_policies_agree():
    torch.manual_seed(0)
    logprobs = -torch.rand(4, 9) * 5
    ref_logprobs = -torch.rand(4, 9) * 5
    assert (F.kl_estimate(logprobs, ref_logprobs, "k3") >= 0).all()
    assert_close(F.kl_estimate(logprobs, logprobs, "k3"), torch.zeros(4, 9))


def test_unknown_kl_estimator_names_the_valid_ones():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        F.kl_estimate(t([[0.0]]), t([[0.0]]), "k4")


# --- KL-penalised rewards ----------------------------------------------------------------------------------------


def test_kl_penalized_rewards_hand_values():
    # Row 0: EOS at position 1 (mask 1, 1, 0). Row 1: never emits EOS (mask all ones).
    # Row 2: one-token response. Row 3: all padding. Masked positions hold garbage.
    logprobs = t([[-1.0, -2.0, NAN], [-1.0, -1.0, -1.0], [-2.0, 5.0, 5.0], [NAN, INF, 3.0]])
    ref_logprobs = t([[-1.5, -1.0, -9.0], [-2.0, -1.0, -0.5], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = t([[1, 1, 0], [1, 1, 1], [1, 0, 0], [0, 0, 0]])
    scores = t([2.0, -1.0, 3.0, 7.0])
    rewards, kl = F.kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, kl_coef=0.1)
    # k1 = logp - ref: row 0: [-1 + 1.5, -2 + 1, pad] = [0.5, -1, 0]; row 1: [1, 0, -0.5]; row 2: [-1, pad, pad].
    assert_close(kl, t([[0.5, -1.0, 0.0], [1.0, 0.0, -0.5], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    # rewards = -0.1 * kl, plus the score at the last real token:
    # row 0: [-0.05, 0.1 + 2, 0]; row 1: [-0.1, 0, 0.05 - 1]; row 2: [0.1 + 3, 0, 0]; row 3: no score at all.
    expected = t([[-0.05, 2.1, 0.0], [-0.1, 0.0, -0.95], [3.1, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert_close(rewards, expected)


def test_kl_penalized_rewards_with_k3():
    # logp = ln 1/2, ref = ln 1/4 on the only token: k3 = ln 2 - 1/2 (see test_kl_estimators_hand_values).
    ln2 = math.log(2.0)
    logprobs = t([[math.log(0.5), 0.0]])
    ref_logprobs = t([[math.log(0.25), 0.0]])
    rewards, kl = F.kl_penalized_rewards(t([1.0]), logprobs, ref_logprobs, t([[1, 0]]), kl_coef=0.5, estimator="k3")
    assert_close(kl, t([[ln2 - 0.5, 0.0]]))
    # -0.5 * (ln 2 - 0.5) + 1 = 1.25 - 0.5 ln 2.
    assert_close(rewards, t([[1.25 - 0.5 * ln2, 0.0]]))


def test_kl_penalized_rewards_accepts_bool_mask_and_bf16_scores():
    rewards, _ = F.kl_penalized_rewards(
        torch.tensor([2.0], dtype=torch.bfloat16), t([[0.0, 0.0]]), t([[0.0, 0.0]]), torch.tensor([[True, True]]), 0.1
    )
    assert rewards.dtype == torch.float32
    assert_close(rewards, t([[0.0, 2.0]]))


# --- GAE ---------------------------------------------------------------------------------------------------------


def test_gae_hand_computed_2x3():
    gamma, lam = 0.9, 0.8  # gamma * lam = 0.72
    rewards = t([[0.0, 0.0, 1.0], [0.1, 2.0, 5.0]])
    values = t([[0.5, 0.6, 0.7], [1.0, 0.5, 9.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])  # row 1 ends at position 1; its position 2 holds garbage
    advantages, returns = F.gae_advantages(rewards, values, mask, gamma, lam)
    # Row 0 (episode ends after t=2, so V(s_3) = 0):
    #   t=2: delta = 1 + 0.9 * 0 - 0.7 = 0.3;            A2 = 0.3
    #   t=1: delta = 0 + 0.9 * 0.7 - 0.6 = 0.03;         A1 = 0.03 + 0.72 * 0.3 = 0.246
    #   t=0: delta = 0 + 0.9 * 0.6 - 0.5 = 0.04;         A0 = 0.04 + 0.72 * 0.246 = 0.21712
    #   returns = A + V = [0.71712, 0.846, 1.0]
    # Row 1 (episode ends after t=1):
    #   t=2: masked: A2 = 0, return 0
    #   t=1: delta = 2 + 0.9 * 0 - 0.5 = 1.5;            A1 = 1.5
    #   t=0: delta = 0.1 + 0.9 * 0.5 - 1 = -0.45;        A0 = -0.45 + 0.72 * 1.5 = 0.63
    #   returns = [1.63, 2.0, 0]
    assert_close(advantages, t([[0.21712, 0.246, 0.3], [0.63, 1.5, 0.0]]))
    assert_close(returns, t([[0.71712, 0.846, 1.0], [1.63, 2.0, 0.0]]))


def test_gae_one_token_response_and_all_padding_row():
    rewards = t([[2.0, NAN, 1.0], [NAN, INF, 1.0]])
    values = t([[0.5, 3.0, NAN], [1.0, NAN, 2.0]])
    mask = t([[1, 0, 0], [0, 0, 0]])
    advantages, returns = F.gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    # One token: A = r - V = 2 - 0.5 = 1.5, return = r = 2. The all-padding row is zeros.
    assert_close(advantages, t([[1.5, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert_close(returns, t([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))


def test_gae_with_gamma_and_lambda_one_is_monte_carlo_return_minus_value():
    rewards = t([[1.0, 2.0, 3.0]])
    values = t([[0.5, 0.25, 4.0]])
    mask = t([[1, 1, 1]])
    advantages, returns = F.gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    # Returns-to-go [6, 5, 3]; advantages [6 - 0.5, 5 - 0.25, 3 - 4].
    assert_close(returns, t([[6.0, 5.0, 3.0]]))
    assert_close(advantages, t([[5.5, 4.75, -1.0]]))


def test_gae_with_lambda_zero_is_one_step_td_error():
    rewards = t([[1.0, 2.0]])
    values = t([[0.5, 0.25]])
    advantages, _ = F.gae_advantages(rewards, values, t([[1, 1]]), gamma=0.5, lam=0.0)
    # delta0 = 1 + 0.5 * 0.25 - 0.5 = 0.625; delta1 = 2 + 0 - 0.25 = 1.75.
    assert_close(advantages, t([[0.625, 1.75]]))


def test_gae_skips_interior_masked_tokens():
    # Masked position 1 is not a step: position 0 bootstraps from position 2.
    rewards = t([[0.0, 9.0, 1.0]])
    values = t([[0.5, 9.0, 0.7]])
    advantages, returns = F.gae_advantages(rewards, values, t([[1, 0, 1]]), gamma=0.9, lam=0.8)
    # t=2: A = 1 - 0.7 = 0.3. t=0: delta = 0 + 0.9 * 0.7 - 0.5 = 0.13; A = 0.13 + 0.72 * 0.3 = 0.346.
    assert_close(advantages, t([[0.346, 0.0, 0.3]]))
    assert_close(returns, t([[0.846, 0.0, 1.0]]))


# --- policy loss -------------------------------------------------------------------------------------------------


def _policy_example():
    # cliprange 0.2, old logprob -1 everywhere, logp = -1 + ln(ratio).
    #   a: ratio 1.5, A = +1: pg1 = -1.5, pg2 = -1.2 -> max -1.2, clipped (pg2 > pg1)
    #   b: ratio 0.5, A = -1: pg1 = 0.5,  pg2 = 0.8  -> max 0.8,  clipped
    #   c: ratio 1.5, A = -1: pg1 = 1.5,  pg2 = 1.2  -> max 1.5,  not clipped
    #   d: ratio 0.5, A = +1: pg1 = -0.5, pg2 = -0.8 -> max -0.5, not clipped
    #   e: ratio 1.0, A = +2: pg1 = pg2 = -2         -> max -2,   not clipped
    #   f: padding with garbage
    ratios = t([[1.5, 0.5, 1.5], [0.5, 1.0, 1.0]])
    old_logprobs = torch.full((2, 3), -1.0)
    logprobs = (old_logprobs + ratios.log()).clone()
    logprobs[1, 2] = INF
    old_logprobs[1, 2] = NAN
    advantages = t([[1.0, -1.0, -1.0], [1.0, 2.0, NAN]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    return logprobs, old_logprobs, advantages, mask


def test_policy_loss_hand_values_and_clipfrac():
    logprobs, old_logprobs, advantages, mask = _policy_example()
    logprobs.requires_grad_()
    loss, stats = F.policy_loss(logprobs, old_logprobs, advantages, mask, cliprange=0.2)
    # loss = (-1.2 + 0.8 + 1.5 - 0.5 - 2) / 5 = -1.4 / 5 = -0.28; clipfrac = 2 / 5 (tokens a and b).
    assert_close(loss, t(-0.28))
    assert_close(stats["clipfrac"], t(0.4))
    ln15, ln2 = math.log(1.5), math.log(2.0)
    # approx_kl = mean 0.5 * log_ratio^2 = 0.5 * (2 ln(1.5)^2 + 2 ln(2)^2 + 0) / 5 = (ln(1.5)^2 + ln(2)^2) / 5.
    assert_close(stats["approx_kl"], t((ln15**2 + ln2**2) / 5))
    # k3 = ratio - 1 - ln(ratio): ratio 1.5 -> 0.5 - ln 1.5; ratio 0.5 -> ln 2 - 0.5; ratio 1 -> 0.
    # Sum 2 (0.5 - ln 1.5) + 2 (ln 2 - 0.5) = 2 ln(4/3); mean over 5 tokens.
    assert_close(stats["approx_kl_k3"], t(2 * math.log(4.0 / 3.0) / 5))
    assert all(s.dim() == 0 and not s.requires_grad for s in stats.values())
    loss.backward()
    # d loss / d logp = -A * ratio / 5 where the unclipped term is active, 0 where clipped or padding:
    # a: 0, b: 0, c: 1.5 / 5 = 0.3, d: -0.5 / 5 = -0.1, e: -2 / 5 = -0.4, f: 0 (no NaN from the garbage).
    assert_close(logprobs.grad, t([[0.0, 0.0, 0.3], [-0.1, -0.4, 0.0]]))


def test_policy_loss_of_all_padding_is_zero_with_finite_gradient():
    logprobs = t([[NAN, 3.0]]).requires_grad_()
    loss, stats = F.policy_loss(logprobs, t([[0.0, NAN]]), t([[INF, 1.0]]), t([[0, 0]]), cliprange=0.2)
    loss.backward()
    assert_close(loss, t(0.0))
    assert_close(stats["clipfrac"], t(0.0))
    assert_close(logprobs.grad, t([[0.0, 0.0]]))


# --- value loss --------------------------------------------------------------------------------------------------


def _value_example():
    # old values 0, cliprange_value 0.2:
    #   v = 0.5,  R = 1:  (0.5 - 1)^2 = 0.25; clipped v 0.2:  (0.2 - 1)^2 = 0.64  -> 0.64, clipped
    #   v = 0.5,  R = 0:  0.25;               clipped v 0.2:  0.04               -> 0.25, not clipped
    #   v = 0.1,  R = 1:  0.81;               inside the range: 0.81             -> 0.81, not clipped
    #   v = -0.5, R = -1: 0.25;               clipped v -0.2: 0.64               -> 0.64, clipped
    #   padding with garbage
    values = t([[0.5, 0.5, 0.1], [-0.5, NAN, 0.0]])
    old_values = t([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    returns = t([[1.0, 0.0, 1.0], [-1.0, 4.0, 0.0]])
    mask = t([[1, 1, 1], [1, 0, 0]])
    return values, old_values, returns, mask


def test_value_loss_clipped_hand_values():
    values, old_values, returns, mask = _value_example()
    values.requires_grad_()
    loss, stats = F.value_loss(values, old_values, returns, mask, cliprange_value=0.2)
    # 0.5 * (0.64 + 0.25 + 0.81 + 0.64) / 4 = 0.5 * 2.34 / 4 = 0.2925; clipfrac 2 / 4.
    assert_close(loss, t(0.2925))
    assert_close(stats["clipfrac"], t(0.5))
    loss.backward()
    # Gradient only through unclipped terms: 0.5 * 2 (v - R) / 4 = (v - R) / 4.
    # Token 2: (0.5 - 0) / 4 = 0.125; token 3: (0.1 - 1) / 4 = -0.225; clipped and padding tokens: 0.
    assert_close(values.grad, t([[0.0, 0.125, -0.225], [0.0, 0.0, 0.0]]))


def test_value_loss_unclipped():
    values, old_values, returns, mask = _value_example()
    loss, stats = F.value_loss(values, old_values, returns, mask, cliprange_value=None)
    # 0.5 * (0.25 + 0.25 + 0.81 + 0.25) / 4 = 0.5 * 1.56 / 4 = 0.195.
    assert_close(loss, t(0.195))
    assert_close(stats["clipfrac"], t(0.0))


# --- explained variance ------------------------------------------------------------------------------------------


def test_explained_variance_hand_values():
    returns = t([[0.0, 2.0, NAN]])
    mask = t([[1, 1, 0]])
    # Var(R) over [0, 2] (biased) = 1. Values [0, 1]: residuals [0, 1], Var = 0.25 -> 1 - 0.25 = 0.75.
    assert_close(F.explained_variance(t([[0.0, 1.0, 5.0]]), returns, mask), t(0.75))
    # Values equal to the returns plus a constant: residual variance 0 -> 1.
    assert_close(F.explained_variance(t([[3.0, 5.0, 0.0]]), returns, mask), t(1.0))
    # Values at the mean [1, 1]: residuals [-1, 1], Var 1 -> 0.
    assert_close(F.explained_variance(t([[1.0, 1.0, 0.0]]), returns, mask), t(0.0))
    # Values [2, 0]: residuals [-2, 2], Var 4 -> 1 - 4 = -3.
    assert_close(F.explained_variance(t([[2.0, 0.0, 0.0]]), returns, mask), t(-3.0))


def test_explained_variance_is_zero_when_returns_are_constant_or_mask_is_empty():
    assert_close(F.explained_variance(t([[0.0, 1.0]]), t([[3.0, 3.0]]), t([[1, 1]])), t(0.0))
    assert_close(F.explained_variance(t([[0.0, 1.0]]), t([[3.0, NAN]]), t([[0, 0]])), t(0.0))


# --- KL controllers ----------------------------------------------------------------------------------------------


def test_fixed_kl_controller_never_moves():
    controller = F.FixedKLController(0.05)
    controller.update(current_kl=100.0, n_steps=512)
    assert controller.value == 0.05
    restored = F.FixedKLController(1.0)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == 0.05


def test_adaptive_kl_controller_moves_up_above_target_and_down_below():
    # target 6, horizon 10000, 1000 samples per update: n_steps / horizon = 0.1.
    up = F.AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    up.update(current_kl=6.6, n_steps=1000)
    # error 6.6 / 6 - 1 = 0.1 (inside the clip): 0.1 * (1 + 0.1 * 0.1) = 0.101.
    assert up.value == pytest.approx(0.101)
    up.update(current_kl=9.0, n_steps=1000)
    # error 9 / 6 - 1 = 0.5, clipped to 0.2: 0.101 * (1 + 0.2 * 0.1) = 0.101 * 1.02 = 0.10302.
    assert up.value == pytest.approx(0.10302)

    down = F.AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    down.update(current_kl=0.0, n_steps=1000)
    # error 0 / 6 - 1 = -1, clipped to -0.2: 0.1 * (1 - 0.2 * 0.1) = 0.098.
    assert down.value == pytest.approx(0.098)
    down.update(current_kl=5.4, n_steps=5000)
    # error 5.4 / 6 - 1 = -0.1: 0.098 * (1 - 0.1 * 0.5) = 0.098 * 0.95 = 0.0931.
    assert down.value == pytest.approx(0.0931)

    steady = F.AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    steady.update(current_kl=6.0, n_steps=1000)
    assert steady.value == pytest.approx(0.1)


def test_adaptive_kl_controller_accepts_a_tensor_kl():
    controller = F.AdaptiveKLController(init_kl_coef=0.2, target=1.0, horizon=100)
    controller.update(current_kl=torch.tensor(2.0), n_steps=10)
    # error clipped to 0.2: 0.2 * (1 + 0.2 * 0.1) = 0.204.
    assert controller.value == pytest.approx(0.204)


def test_adaptive_kl_controller_state_dict_round_trip_resumes_exactly():
    controller = F.AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    for kl in (9.0, 7.1, 2.3):
        controller.update(current_kl=kl, n_steps=256)
    resumed = F.AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    resumed.load_state_dict(controller.state_dict())
    assert resumed.value == controller.value
    controller.update(current_kl=8.0, n_steps=256)
    resumed.update(current_kl=8.0, n_steps=256)
    assert resumed.value == controller.value


@pytest.mark.parametrize(("target", "horizon"), [(0.0, 10000), (6.0, 0)])
def test_adaptive_kl_controller_rejects_non_positive_target_or_horizon(target, horizon):
    with pytest.raises(ValueError, match="must be positive"):
        F.AdaptiveKLController(init_kl_coef=0.1, target=target, horizon=horizon)


# --- missing EOS penalty -----------------------------------------------------------------------------------------


def test_missing_eos_penalty():
    scores = t([1.0, 2.0, 3.0])
    has_eos = torch.tensor([True, False, True])
    # Only the second response lacks EOS: 2 - 1.5 = 0.5.
    assert_close(F.missing_eos_penalty(scores, has_eos, penalty=1.5), t([1.0, 0.5, 3.0]))
