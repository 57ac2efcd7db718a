"""Reward terms: running moments and the learned-reward fast path (the safe import of programmatic rewards is
tested in tests/reliability/test_safe_defaults.py)."""

import pytest
import torch

from rlhf.generation.sampling import Batch, encode_prompts, left_pad, response_mask
from rlhf.rewards.sources import RewardTerm, RunningMoments


def test_running_moments_match_the_concatenated_batches():
    moments = RunningMoments()
    chunks = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0]), torch.tensor([-4.0, 0.5])]
    for chunk in chunks:
        moments.update(chunk)
    everything = torch.cat(chunks)
    assert moments.count == 6
    assert moments.mean == pytest.approx(everything.mean().item())
    assert moments.std == pytest.approx(everything.std(unbiased=False).item())
    restored = RunningMoments()
    restored.load_state_dict(moments.state_dict())
    assert restored.state_dict() == moments.state_dict()


def test_learned_reward_on_sampled_ids_equals_scoring_the_rendered_text():
    """The fast path (scoring token ids directly) must match how the reward stage formats text."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.models.embedded import resolve_embedded
    from rlhf.rewards.scoring import render, reward_scores

    path = resolve_embedded("embedded:tiny")
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).eval()
    prompts = [
        [{"role": "user", "content": "Where is my order #123?"}],
        [{"role": "user", "content": "Hi, the tent arrived torn. What now?"}],
    ]
    replies = ["Sorry about the wait, I've chased it.", "I'm sorry! I'll send a new tent today."]
    eos = tokenizer.eos_token_id
    response_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] + [eos] for r in replies]
    width = max(len(r) for r in response_ids)
    response = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in response_ids])
    query, query_mask = left_pad(encode_prompts(tokenizer, prompts, 64), tokenizer.pad_token_id)
    mask, has_eos = response_mask(response, eos)
    batch = Batch(query, query_mask, response, mask, has_eos)
    term = RewardTerm("learned", 1.0, model=model, tokenizer=tokenizer, shares_tokenizer=True)
    fast = term.score(batch, [p[0]["content"] for p in prompts], replies, tokenizer)
    texts = [render(tokenizer, p, r) for p, r in zip(prompts, replies, strict=True)]
    torch.testing.assert_close(fast, reward_scores(model, tokenizer, texts), atol=1e-4, rtol=1e-4)
