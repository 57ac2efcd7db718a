"""Hand-computed checks of the advantage estimators in rlhf.ppo.advantages.

Every expected number is worked out in the comment next to it; nothing depends on hardware.
"""

import ast
import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from rlhf.ppo import advantages as A
from rlhf.ppo import functional as F

NAN = float("nan")


def t(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


def test_module_imports_only_torch_and_the_functional_maths():
    tree = ast.parse(Path(A.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= {"torch", "collections.abc", "rlhf.ppo.functional"}


def test_every_estimator_is_named_once_and_only_gae_needs_a_critic():
    assert set(A.ESTIMATORS) - set(A.CRITIC_FREE) == {"gae"}
    assert set(A.GROUP_BASELINES) <= set(A.CRITIC_FREE)


# --- sequence rewards ----------------------------------------------------------------------------------------------


def test_sequence_rewards_subtract_the_summed_kl():
    scores = t([1.0, 2.0])
    kl = t([[0.1, 0.2, NAN], [0.3, NAN, 5.0]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    # Row 0: 1 - 0.5 * (0.1 + 0.2) = 0.85. Row 1: 2 - 0.5 * 0.3 = 1.85. Masked NaN and 5.0 are never read.
    assert_close(A.sequence_rewards(scores, kl, mask, 0.5), t([0.85, 1.85]))
    assert_close(A.sequence_rewards(scores, kl, mask, 0.0), scores)


# --- grpo ----------------------------------------------------------------------------------------------------------


def test_grpo_hand_values():
    rewards = t([1.0, 2.0, 3.0, 0.0, 4.0, 8.0])
    # Group [1, 2, 3]: mean 2, unbiased std sqrt((1 + 0 + 1) / 2) = 1 -> [-1, 0, 1].
    # Group [0, 4, 8]: mean 4, std sqrt((16 + 0 + 16) / 2) = 4 -> [-1, 0, 1].
    assert_close(A.grpo_advantages(rewards, 3, eps=0.0), t([-1.0, 0.0, 1.0, -1.0, 0.0, 1.0]))
    # Groups of two: [1, 2] mean 1.5, std sqrt(0.25 + 0.25) = 1/sqrt(2) -> -+0.5 * sqrt(2) = -+0.70711.
    half_root2 = 0.5 * math.sqrt(2)
    assert_close(A.grpo_advantages(rewards, 2, eps=0.0)[:2], t([-half_root2, half_root2]))


def test_grpo_eps_is_added_to_the_std():
    # [0, 2]: mean 1, std sqrt(2); with eps 1: -+1 / (sqrt(2) + 1) = -+0.41421.
    expected = 1.0 / (math.sqrt(2) + 1.0)
    assert_close(A.grpo_advantages(t([0.0, 2.0]), 2, eps=1.0), t([-expected, expected]))


def test_grpo_group_with_equal_rewards_gets_exactly_zero():
    # The float32 mean of seven 0.7s is 6e-8 off 0.7, so a plain (r - mean) / (std + 1e-6) gives noise of order
    # 0.06 instead of 0. The group carries no preference: exactly 0.
    equal = torch.full((7,), 0.7)
    assert (equal - equal.mean()).abs().max() > 0  # the rounding this test is about
    out = A.grpo_advantages(torch.cat([equal, t([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])]), 7)
    assert torch.equal(out[:7], torch.zeros(7))
    # [1..7]: mean 4, unbiased std sqrt(28 / 6); (r - 4) / std.
    assert_close(out[7:], (t([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]) - 4) / math.sqrt(28 / 6), atol=1e-5, rtol=0)
    assert torch.isfinite(out).all()


def test_grpo_and_rloo_of_groups_of_one_are_zero():
    rewards = t([3.0, -1.0])
    assert torch.equal(A.grpo_advantages(rewards, 1), torch.zeros(2))
    assert torch.equal(A.rloo_advantages(rewards, 1), torch.zeros(2))


@pytest.mark.parametrize("estimator", [A.grpo_advantages, A.rloo_advantages])
def test_group_estimators_reject_a_batch_that_does_not_split_into_groups(estimator):
    with pytest.raises(ValueError, match="groups of 2"):
        estimator(t([1.0, 2.0, 3.0]), 2)


# --- rloo ----------------------------------------------------------------------------------------------------------


def test_rloo_hand_values():
    rewards = t([1.0, 2.0, 3.0, 0.0, 4.0, 4.0])
    # Group [1, 2, 3]: baselines (2 + 3) / 2 = 2.5, (1 + 3) / 2 = 2, (1 + 2) / 2 = 1.5 -> [-1.5, 0, 1.5].
    # Group [0, 4, 4]: baselines 4, 2, 2 -> [-4, 2, 2].
    assert_close(A.rloo_advantages(rewards, 3), t([-1.5, 0.0, 1.5, -4.0, 2.0, 2.0]))


def test_rloo_is_k_over_k_minus_one_times_the_centred_reward():
    rewards = torch.randn(12, generator=torch.Generator().manual_seed(0))
    centred = rewards.reshape(3, 4) - rewards.reshape(3, 4).mean(dim=1, keepdim=True)
    assert_close(A.rloo_advantages(rewards, 4), (4 / 3 * centred).reshape(-1))


def test_rloo_group_with_equal_rewards_is_zero():
    assert_close(A.rloo_advantages(t([0.7, 0.7, 0.7, 0.7]), 4), torch.zeros(4))


# --- to_tokens -----------------------------------------------------------------------------------------------------


def test_to_tokens_spreads_over_real_tokens_only():
    mask = t([[1, 1, 0], [1, 1, 1], [0, 0, 0]])  # short, never-ending (no EOS: all real), all padding
    assert_close(A.to_tokens(t([2.0, -1.0, 5.0]), mask), t([[2.0, 2.0, 0.0], [-1.0, -1.0, -1.0], [0.0, 0.0, 0.0]]))


def test_a_response_that_never_ends_carries_its_penalised_advantage_on_every_token():
    # Prompt group of 2: response 0 ends after 2 tokens (EOS included in the mask), response 1 never emits EOS and
    # fills all 4 positions. Both score 1; the missing-EOS penalty of 1 takes response 1 to 0.
    mask = t([[1, 1, 0, 0], [1, 1, 1, 1]])
    scores = F.missing_eos_penalty(t([1.0, 1.0]), torch.tensor([True, False]), 1.0)
    rewards = A.sequence_rewards(scores, torch.zeros(2, 4), mask, 0.1)  # [1, 0]
    # GRPO: mean 0.5, std sqrt(0.25 + 0.25) = 1/sqrt(2) -> -+0.70711; RLOO: 1 - 0 = 1 and 0 - 1 = -1.
    half_root2 = 0.5 * math.sqrt(2)
    grpo = A.to_tokens(A.grpo_advantages(rewards, 2, eps=0.0), mask)
    assert_close(grpo, t([[half_root2, half_root2, 0, 0], [-half_root2] * 4]))
    rloo = A.to_tokens(A.rloo_advantages(rewards, 2), mask)
    assert_close(rloo, t([[1.0, 1.0, 0, 0], [-1.0] * 4]))


# --- reinforce++ ---------------------------------------------------------------------------------------------------


def test_returns_to_go_hand_values():
    rewards = t([[1.0, 2.0, 3.0], [4.0, NAN, 7.0]])
    mask = t([[1, 1, 1], [1, 0, 0]])
    # Row 0 with gamma 0.5: G2 = 3, G1 = 2 + 0.5 * 3 = 3.5, G0 = 1 + 0.5 * 3.5 = 2.75. Row 1: one real token.
    assert_close(A.returns_to_go(rewards, mask, 0.5), t([[2.75, 3.5, 3.0], [4.0, 0.0, 0.0]]))


def test_returns_to_go_skip_interior_masked_tokens_like_gae():
    rewards = t([[1.0, 100.0, 2.0]])
    mask = t([[1, 0, 1]])
    # The masked middle token is not a step: G2 = 2, G0 = 1 + 0.5 * 2 = 2.
    assert_close(A.returns_to_go(rewards, mask, 0.5), t([[2.0, 0.0, 2.0]]))
    advantages, _ = F.gae_advantages(rewards, torch.zeros(1, 3), mask, gamma=0.5, lam=1.0)
    assert_close(A.returns_to_go(rewards, mask, 0.5), advantages)


def test_reinforce_pp_hand_values():
    rewards = t([[0.0, 0.0, 1.0], [0.0, 2.0, NAN]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    advantages, returns = A.reinforce_pp_advantages(rewards, mask, gamma=1.0)
    # Returns [[1, 1, 1], [2, 2, -]]. Real values 1, 1, 1, 2, 2: mean 1.4; squared deviations 3 * 0.16 + 2 * 0.36 =
    # 1.2; unbiased variance 1.2 / 4 = 0.3. Whitened: -0.4 / sqrt(0.3) = -0.73030, 0.6 / sqrt(0.3) = 1.09545.
    assert_close(returns, t([[1.0, 1.0, 1.0], [2.0, 2.0, 0.0]]))
    low, high = -0.4 / math.sqrt(0.3), 0.6 / math.sqrt(0.3)
    assert_close(advantages, t([[low, low, low], [high, high, 0.0]]))


def test_reinforce_pp_with_kl_in_the_reward_and_a_response_that_never_ends():
    # Two responses of 2 tokens; both real to the end (neither emitted EOS), so the score lands on the last token.
    logprobs = t([[-1.0, -1.0], [-1.0, -1.0]])
    ref_logprobs = t([[-2.0, -1.0], [-1.0, -1.0]])
    mask = t([[1, 1], [1, 1]])
    rewards, kl = F.kl_penalized_rewards(t([1.0, 1.0]), logprobs, ref_logprobs, mask, kl_coef=0.5, estimator="k1")
    # k1 = logp - ref = [[1, 0], [0, 0]]; rewards [[-0.5, 1], [0, 1]]; returns (gamma 1) [[0.5, 1], [1, 1]].
    # Mean 0.875; squared deviations 0.140625 + 3 * 0.015625 = 0.1875; unbiased variance 0.0625, std 0.25.
    advantages, returns = A.reinforce_pp_advantages(rewards, mask, gamma=1.0)
    assert_close(returns, t([[0.5, 1.0], [1.0, 1.0]]))
    assert_close(advantages, t([[-1.5, 0.5], [0.5, 0.5]]))


def test_reinforce_pp_uses_the_moments_it_is_given():
    # A distributed caller passes the whole batch's moments: (x - 1) / sqrt(4) with the given mean 1, variance 4.
    advantages, _ = A.reinforce_pp_advantages(
        t([[3.0, 5.0]]), t([[1, 1]]), gamma=1.0, moments=lambda x, m: (t(1.0), t(4.0))
    )
    # Returns [8, 5] -> [(8 - 1) / 2, (5 - 1) / 2].
    assert_close(advantages, t([[3.5, 2.0]]))


# --- kl as a loss term ---------------------------------------------------------------------------------------------


def test_kl_loss_hand_values_and_gradient():
    logprobs = t([[-1.0, -2.0, NAN]]).requires_grad_()
    ref_logprobs = t([[-1.5, -2.0, NAN]])
    mask = t([[1, 1, 0]])
    # k1: logp - ref = [0.5, 0] -> mean 0.25.
    assert_close(A.kl_loss(logprobs, ref_logprobs, mask, "k1"), t(0.25))
    # k3: log_r = ref - logp = [-0.5, 0]; exp(-0.5) + 0.5 - 1 = 0.10653 and 0 -> mean 0.053265.
    loss = A.kl_loss(logprobs, ref_logprobs, mask, "k3")
    assert_close(loss, t((math.exp(-0.5) - 0.5) / 2))
    loss.backward()
    # d/dlogp of exp(ref - logp) - (ref - logp) - 1 = 1 - exp(ref - logp): 1 - exp(-0.5) = 0.39347, over 2 tokens.
    # The NaN at the masked position gets gradient 0, not NaN.
    assert_close(logprobs.grad, t([[(1 - math.exp(-0.5)) / 2, 0.0, 0.0]]))


def test_kl_loss_is_zero_when_the_policy_is_the_reference():
    logprobs = t([[-0.3, -4.0]])
    for estimator in ("k1", "k3"):
        assert_close(A.kl_loss(logprobs, logprobs, t([[1, 1]]), estimator), t(0.0))
