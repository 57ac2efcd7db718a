"""The ppo update's numerics: bf16 sampler and trainer log-probs agree before any update (and, over longer responses,
are recomputed by the trainer), gradient accumulation keeps the minibatch's token mean, policy and value gradient
norms are reported apart, and sampling filters are refused."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from rlhf.config import CompareStage, PPOStage
from rlhf.generation.sampling import Batch, left_pad, response_mask, sample
from rlhf.ppo import functional as F
from rlhf.ppo.models import ActorCritic
from rlhf.ppo.state import Estimate, Rollout, Scored
from rlhf.stages import ppo

BASE = {"stage": "ppo", "output_dir": "out", "data": {"train": "p.jsonl"}, "rewards": [{"name": "r", "model": "m"}]}


def ppo_cfg(**sections) -> PPOStage:
    return PPOStage.model_validate({**BASE, **sections})


@pytest.fixture(scope="module")
def tiny_path():
    from rlhf.models.embedded import resolve_embedded

    return resolve_embedded("embedded:tiny")


def _scored(batch: Batch, ref_logprobs: torch.Tensor, values: torch.Tensor | None, old_logprobs) -> Scored:
    zeros = torch.zeros(batch.response.shape[0])
    return Scored([], [], {}, zeros, zeros, ref_logprobs, values, old_logprobs)


def test_bf16_sampler_and_training_logprobs_agree_before_any_update(tiny_path):
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        # Logits the size of a trained model's (|z| ~ 30): there a bf16 division by the temperature moves
        # log-probs by hundredths of a nat, at the random model's |z| < 1 only by thousandths.
        policy.model.norm.weight.mul_(30.0)
    pad, eos = policy.config.pad_token_id, policy.config.eos_token_id
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, 9, (32,), generator=generator).tolist()
    query, query_mask = left_pad([torch.randint(3, 200, (n,), generator=generator).tolist() for n in lengths], pad)
    # One new token: the sampler's logits come from the same full-prompt forward as the trainer's, so the two paths
    # can differ only in how the temperature is applied (longer responses add the KV cache's own bf16 rounding).
    sampled = sample(
        policy,
        query,
        query_mask,
        max_new_tokens=1,
        temperature=0.7,
        top_k=0,
        top_p=1.0,
        eos_id=eos,
        pad_id=pad,
        generator=generator,
        stats=True,
        decoder="hf",
    )
    mask, has_eos = response_mask(sampled.tokens, eos)
    batch = Batch(query, query_mask, sampled.tokens, mask, has_eos)
    ids, attention, positions = batch.sequence()
    with torch.no_grad():
        ref_logprobs = ppo._ref_logprobs(policy, None, ids, attention, positions, 1, 0.7, batch.response)
        cfg = ppo_cfg(
            rollout={"temperature": 0.7}, advantage={"estimator": "reinforce_pp"}, training={"batch_size": 32}
        )
        rollout = Rollout(list(range(32)), batch, sampled.logprobs, torch.zeros(()))
        estimate = Estimate(torch.ones_like(ref_logprobs), None, torch.zeros_like(ref_logprobs))
        _, stats = ppo.micro_batch_loss(
            cfg,
            ActorCritic(policy),
            rollout,
            _scored(batch, ref_logprobs, None, rollout.logprobs),
            estimate,
            torch.arange(32),
            0.0,
            32,
        )
    real = mask.bool()
    torch.testing.assert_close(ref_logprobs[real], sampled.logprobs[real], atol=1e-4, rtol=0)
    # The trainer's own forward: approx_kl = mean 0.5 * (new - old)^2, about 1e-4 with a bf16 division.
    assert stats["policy/approx_kl"] < 1e-8
    assert stats["policy/clipfrac"] == 0


def _critic_model(tiny_path, critic: bool = True) -> ActorCritic:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(tiny_path)
    if not critic:
        return ActorCritic(policy)
    return ActorCritic(policy, critic=AutoModelForSequenceClassification.from_pretrained(tiny_path, num_labels=1))


def _rollout(model: ActorCritic) -> tuple[Rollout, Scored, Estimate]:
    """Eight responses of 1 to 8 real tokens, 15, 3, 11 and 7 per micro-batch of two (unequal counts are what tell
    the normalisations apart), with old log-probs, values and advantages near the model's own."""
    pad, eos = model.policy.config.pad_token_id, model.policy.config.eos_token_id
    generator = torch.Generator().manual_seed(1)
    query, query_mask = left_pad(
        [torch.randint(3, 200, (3 + i % 3,), generator=generator).tolist() for i in range(8)], pad
    )
    response = torch.randint(3, 200, (8, 8), generator=generator)
    for row, length in enumerate([8, 7, 1, 2, 6, 5, 3, 4]):
        response[row, length - 1] = eos
        response[row, length:] = pad
    mask, has_eos = response_mask(response, eos)
    batch = Batch(query, query_mask, response, mask, has_eos)
    with torch.no_grad():
        logits, values = model(*batch.sequence(), 8)
        logprobs = F.logprobs_from_logits(logits, response)
        values = values if values is not None else torch.zeros_like(logprobs)
    noise = torch.randn(4, 8, 8, generator=generator)
    rollout = Rollout(list(range(8)), batch, logprobs + 0.1 * noise[0], torch.zeros(()))
    scored = _scored(batch, logprobs + 0.1 * noise[1], values + 0.1 * noise[2], rollout.logprobs)
    if not model.has_value:
        scored.values = None
    return rollout, scored, Estimate(noise[3], values + noise[2], torch.zeros_like(logprobs))


def _accumulated_gradient(tiny_path, accumulation: int, kl_mode: str) -> torch.Tensor:
    from accelerate import Accelerator

    # kl.mode 'reward' with a critic (gae: policy and value losses); 'loss' without one (grpo: policy and KL losses).
    gae = kl_mode == "reward"
    model = _critic_model(tiny_path, critic=gae)
    cfg = ppo_cfg(
        training={"batch_size": 8 if gae else 4, "gradient_accumulation_steps": accumulation},
        kl={"mode": kl_mode},
        advantage={"estimator": "gae" if gae else "grpo"},
        rollout={"samples_per_prompt": 1 if gae else 2},
    )
    rollout, scored, estimate = _rollout(model)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    micro = 8 // accumulation
    token_count = rollout.batch.response_mask.sum()
    for start in range(0, 8, micro):
        rows = torch.arange(start, start + micro)
        loss, _ = ppo.micro_batch_loss(cfg, model, rollout, scored, estimate, rows, 0.3, token_count)
        accelerator.backward(loss)  # divides by gradient_accumulation_steps, as in the stage
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("kl_mode", ["reward", "loss"])
def test_accumulating_four_micro_batches_gives_the_whole_minibatch_gradient(tiny_path, kl_mode):
    whole = _accumulated_gradient(tiny_path, 1, kl_mode)
    accumulated = _accumulated_gradient(tiny_path, 4, kl_mode)
    assert whole.abs().max() > 0
    torch.testing.assert_close(accumulated, whole, rtol=1e-4, atol=1e-7)


def test_policy_and_value_gradient_norms_are_reported_apart_under_one_joint_clip(tiny_path):
    from accelerate import Accelerator

    model = _critic_model(tiny_path)
    optimizer = torch.optim.AdamW(model.param_groups(1e-4, 1e-4, 0.0))
    for param in model.policy.parameters():
        param.grad = torch.full_like(param, 1e-4)
    for param in model.critic.parameters():
        param.grad = torch.full_like(param, 1.0)

    def norm(params) -> torch.Tensor:
        return torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params]))

    policy_norm, value_norm = norm(model.policy.parameters()), norm(model.critic.parameters())
    norms = ppo.clip_gradients(Accelerator(cpu=True), optimizer, max_norm=1.0)
    assert set(norms) == {"grad_norm", "grad_norm/policy", "grad_norm/value"}
    # Each group's norm before the clip, so a critic gradient that dominates the clip is visible in the log.
    # (float32 sums in another order: agree to 1e-3, not bit for bit)
    torch.testing.assert_close(norms["grad_norm/policy"], policy_norm, rtol=1e-3, atol=0)
    torch.testing.assert_close(norms["grad_norm/value"], value_norm, rtol=1e-3, atol=0)
    torch.testing.assert_close(norms["grad_norm"], torch.hypot(policy_norm, value_norm), rtol=1e-3, atol=0)
    assert norms["grad_norm/policy"] < 1.0 < norms["grad_norm/value"]
    # One joint clip: both groups scaled by the same factor, the joint norm brought to max_norm.
    scale = 1.0 / torch.hypot(policy_norm, value_norm)
    torch.testing.assert_close(norm(model.policy.parameters()), policy_norm * scale, rtol=5e-3, atol=0)
    torch.testing.assert_close(
        norm([*model.policy.parameters(), *model.critic.parameters()]), torch.tensor(1.0), rtol=1e-3, atol=0
    )


@pytest.mark.parametrize(("key", "value"), [("top_k", 50), ("top_p", 0.9)])
def test_sampling_filters_are_refused_in_ppo_and_compare(key, value):
    with pytest.raises(ValidationError, match=rf"rollout\.{key}={value}: sampling filters are not supported"):
        ppo_cfg(rollout={key: value})
    compare = {
        "stage": "compare",
        "output_dir": "out",
        "models": [{"name": "sft", "path": "/m/sft"}],
        "prompts": {"path": "prompts.jsonl"},
        "judges": [{"name": "rules", "function": "brand_voice"}],
    }
    with pytest.raises(ValidationError, match=rf"rollout\.{key}={value}: sampling filters are not supported"):
        CompareStage.model_validate({**compare, "rollout": {key: value}})
    CompareStage.model_validate({**compare, "rollout": {"top_k": 0, "top_p": 1.0}})


def _bf16_rollout(tiny_path, temperature: float):
    """A bf16 policy with trained-size logits and 16 responses of up to 12 tokens from the KV-cache sampler."""
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        policy.model.norm.weight.mul_(30.0)
    pad, eos = policy.config.pad_token_id, policy.config.eos_token_id
    generator = torch.Generator().manual_seed(2)
    query, query_mask = left_pad(
        [torch.randint(3, 200, (4 + i % 5,), generator=generator).tolist() for i in range(16)], pad
    )
    sampled = sample(
        policy,
        query,
        query_mask,
        max_new_tokens=12,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        eos_id=eos,
        pad_id=pad,
        generator=generator,
        stats=True,
    )
    mask, has_eos = response_mask(sampled.tokens, eos)
    batch = Batch(query, query_mask, sampled.tokens, mask, has_eos)
    return policy, Rollout(list(range(16)), batch, sampled.logprobs, torch.zeros(()))


@pytest.mark.parametrize("recompute", [True, False])
def test_recomputed_old_logprobs_make_the_first_bf16_ratio_exactly_one(tiny_path, recompute):
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from rlhf.ppo.state import PPOState, Setup
    from rlhf.rewards.sources import build_reward_terms

    temperature = 0.7
    policy, rollout = _bf16_rollout(tiny_path, temperature)
    setting = "always" if recompute else "never"
    cfg = ppo_cfg(
        model={"name_or_path": "m", "dtype": "bfloat16"},
        rewards=[{"name": "voice", "function": "brand_voice"}],
        rollout={"temperature": temperature, "recompute_logprobs": setting},
        advantage={"estimator": "reinforce_pp"},
        training={"batch_size": 16},
    )
    accelerator = Accelerator(cpu=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    model = ActorCritic(policy)
    setup = Setup(
        cfg=cfg,
        accelerator=accelerator,
        tokenizer=tokenizer,
        ref_policy=policy,
        terms=build_reward_terms(cfg.rewards, tokenizer, "bfloat16", False),
        prompts=[[{"role": "user", "content": "hi"}]] * 16,
        infos=[{}] * 16,
        encoded=[],
        total_steps=1,
        recompute_logprobs=ppo._recompute_logprobs(setting, "bfloat16", accelerator),
    )
    state = PPOState(model, None, None, F.FixedKLController(0.0), None, torch.Generator())
    scored = ppo.score(setup, state, rollout)
    mask = rollout.batch.response_mask
    estimate = Estimate(torch.ones_like(scored.ref_logprobs), None, torch.zeros_like(scored.ref_logprobs))
    with torch.no_grad():
        _, stats = ppo.micro_batch_loss(cfg, model, rollout, scored, estimate, torch.arange(16), 0.0, mask.sum())
    gap = ((rollout.logprobs - scored.old_logprobs).abs() * mask).max()
    if recompute:
        # The trainer's own numerics: before any update the ratio is exactly 1, whatever the sampler's rounding.
        assert stats["policy/approx_kl"] == 0
        assert gap > 1e-3, "the KV-cache sampler and the full forward round bf16 differently over 12 tokens"
        assert (scored.old_logprobs[mask == 0] == 0).all()
    else:
        torch.testing.assert_close(scored.old_logprobs, rollout.logprobs, rtol=0, atol=0)
        assert stats["policy/approx_kl"] > 0


def test_recompute_auto_follows_the_numerics():
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    assert ppo._recompute_logprobs("auto", "bfloat16", accelerator)
    assert not ppo._recompute_logprobs("auto", "float32", accelerator)
    assert ppo._recompute_logprobs("always", "float32", accelerator)
    assert not ppo._recompute_logprobs("never", "bfloat16", accelerator)
