"""Held-out evaluation (rlhf.evaluation) on embedded:tiny and a perturbed copy of it, one process.

What is checked: generation is in prompt order and independent of the batch size (greedy) and reproducible from its
seed (sampled); the per-sequence KL is exactly 0 for a model against itself and equals the summed log-ratio of two
plain forwards otherwise, also when the reference is the model with its LoRA adapter disabled; reward terms are
scored per prompt and weighted into the total; and `evaluate_against_reference` reports no gain and no KL for a
policy equal to its reference, and the right gain for one that differs.
"""

from __future__ import annotations

import copy

import pytest
import torch

from rlhf.evaluation import evaluate_against_reference, generate, score_generations, sequence_kl
from rlhf.rewards.sources import RewardTerm

PROMPTS = [
    [{"role": "user", "content": text}]
    for text in (
        "Where is my order?",
        "My parcel arrived damaged.",
        "Can I change my delivery address?",
        "The paddle broke after a week.",
        "Do you ship to Norway?",
    )
]
SETTINGS = dict(max_prompt_length=32, max_new_tokens=6)


@pytest.fixture(scope="module")
def models():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.models.loading import resolve_model_path

    path = resolve_model_path("embedded:tiny")
    tokenizer = AutoTokenizer.from_pretrained(path)
    policy = AutoModelForCausalLM.from_pretrained(path).eval()
    other = copy.deepcopy(policy)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return policy, other, tokenizer


def test_generation_is_in_prompt_order_whatever_the_batch_size(models):
    policy, _, tokenizer = models
    whole = generate(policy, tokenizer, PROMPTS, temperature=0, batch_size=8, **SETTINGS)
    split = generate(policy, tokenizer, PROMPTS, temperature=0, batch_size=2, **SETTINGS)
    assert [b.response.shape[0] for b in split.batches] == [2, 2, 1]
    assert len(whole.texts) == len(PROMPTS) and split.texts == whole.texts
    one = generate(policy, tokenizer, PROMPTS[3:4], temperature=0, **SETTINGS)
    assert one.texts == whole.texts[3:4]  # row 3 is prompt 3's reply, not another's


def test_sampling_is_reproducible_from_its_seed(models):
    policy, _, tokenizer = models
    first = generate(policy, tokenizer, PROMPTS, temperature=1.0, seed=3, **SETTINGS)
    again = generate(policy, tokenizer, PROMPTS, temperature=1.0, seed=3, **SETTINGS)
    other = generate(policy, tokenizer, PROMPTS, temperature=1.0, seed=4, **SETTINGS)
    assert all(torch.equal(a.response, b.response) for a, b in zip(first.batches, again.batches, strict=True))
    assert not all(torch.equal(a.response, b.response) for a, b in zip(first.batches, other.batches, strict=True))


def _summed_log_ratio(model, reference, batch) -> torch.Tensor:
    """sum_t log p(y_t) - log q(y_t) over the response tokens, from two plain full forwards."""
    input_ids, attention_mask, position_ids = batch.sequence()
    n, r = batch.response.shape
    out = []
    for m in (model, reference):
        logits = m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        predicting = logits[:, -r - 1 : -1].log_softmax(-1)  # position t-1 predicts token t
        out.append(predicting.gather(-1, batch.response.unsqueeze(-1)).squeeze(-1))
    return ((out[0] - out[1]) * batch.response_mask).sum(1)


@torch.no_grad()
def test_sequence_kl_is_the_summed_log_ratio(models):
    policy, other, tokenizer = models
    [batch] = generate(other, tokenizer, PROMPTS, temperature=1.0, seed=0, **SETTINGS).batches
    assert torch.equal(sequence_kl(other, other, batch), torch.zeros(len(PROMPTS)))
    expected = _summed_log_ratio(other, policy, batch)
    assert expected.abs().min() > 1e-3
    assert torch.allclose(sequence_kl(other, policy, batch), expected, atol=1e-4)


@torch.no_grad()
def test_sequence_kl_against_the_disabled_adapter(models):
    from peft import LoraConfig, get_peft_model

    policy, _, tokenizer = models
    # init_lora_weights=False: random B matrices, so the adapter changes the model from the start.
    tuned = get_peft_model(
        copy.deepcopy(policy), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    [batch] = generate(tuned, tokenizer, PROMPTS, temperature=1.0, seed=0, **SETTINGS).batches
    against_base = sequence_kl(tuned, policy, batch)
    assert against_base.abs().max() > 1e-3
    assert torch.allclose(sequence_kl(tuned, None, batch, reference_is_disabled_adapter=True), against_base, atol=1e-5)


def test_terms_are_scored_per_prompt_and_weighted(models):
    policy, _, tokenizer = models
    generations = generate(policy, tokenizer, PROMPTS, temperature=0, batch_size=2, **SETTINGS)
    terms = [
        RewardTerm("prompt_words", 2.0, function=lambda prompts, replies: [len(p.split()) for p in prompts]),
        RewardTerm("reply_chars", -0.5, function=lambda prompts, replies: [len(r) for r in replies]),
    ]
    scores = score_generations(terms, generations, PROMPTS, tokenizer)
    words = torch.tensor([len(p[0]["content"].split()) for p in PROMPTS], dtype=torch.float32)
    chars = torch.tensor([len(t) for t in generations.texts], dtype=torch.float32)
    assert torch.equal(scores["prompt_words"], words) and torch.equal(scores["reply_chars"], chars)
    assert torch.allclose(scores["total"], 2.0 * words - 0.5 * chars)


def _cfg(tmp_path):
    from rlhf.config import PPOStage

    return PPOStage(
        stage="ppo",
        output_dir=str(tmp_path),
        data={"train": "prompts.jsonl", "max_length": 40, "max_prompt_length": 32},
        rewards=[{"name": "rules", "function": "brand_voice"}],
        rollout={"max_new_tokens": 6},
        training={"batch_size": 2},
    )


def test_evaluation_against_reference(models, tmp_path):
    from rlhf.distributed import make_accelerator

    policy, other, tokenizer = models
    terms = [RewardTerm("length", 1.0, function=lambda prompts, replies: [len(r) for r in replies])]
    accelerator = make_accelerator()
    same = evaluate_against_reference(
        policy, copy.deepcopy(policy), tokenizer, terms, PROMPTS, _cfg(tmp_path), accelerator
    )
    # The same weights sampled with the same seed: the same replies, no gain, a KL of exactly 0.
    assert same["eval_prompts"] == len(PROMPTS)
    assert same["eval_policy_total_mean"] == same["eval_reference_total_mean"]
    assert same["eval_kl_to_reference_mean"] == 0.0 and same["eval_reward_gain_in_reference_std"] == 0.0
    assert len(same["eval_samples"]) == 3 and same["eval_samples"][0]["prompt"] == "Where is my order?"

    moved = evaluate_against_reference(other, policy, tokenizer, terms, PROMPTS, _cfg(tmp_path), accelerator)
    assert moved["eval_kl_to_reference_mean"] != 0.0
    gain = (moved["eval_policy_total_mean"] - moved["eval_reference_total_mean"]) / moved["eval_reference_total_std"]
    assert moved["eval_reward_gain_in_reference_std"] == pytest.approx(gain)
    # The reference's side is the same sampling of the same model as before.
    assert moved["eval_reference_total_mean"] == same["eval_reference_total_mean"]
    assert 0 < moved["eval_policy_length_mean"] <= 6
