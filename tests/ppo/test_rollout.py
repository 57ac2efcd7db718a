"""Rollout mechanics: masks, padding, sampling filters, and batched left-padded sampling against unbatched."""

import pytest
import torch

from rlhf.generation.sampling import Batch, left_pad, next_token, positions, response_mask, sample

EOS, PAD = 2, 0


def test_response_mask_stops_after_first_eos():
    response = torch.tensor([[5, 6, EOS, PAD], [5, EOS, 7, EOS], [5, 6, 7, 8], [EOS, PAD, PAD, PAD]])
    mask, has_eos = response_mask(response, EOS)
    torch.testing.assert_close(mask, torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]))
    assert has_eos.tolist() == [True, True, False, True]


def test_left_pad_and_positions():
    ids, mask = left_pad([[7, 8, 9], [4]], PAD)
    assert ids.tolist() == [[7, 8, 9], [PAD, PAD, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


def test_batch_sequence_concatenates_and_masks_padding():
    batch = Batch(
        query=torch.tensor([[PAD, 3]]),
        query_mask=torch.tensor([[0, 1]]),
        response=torch.tensor([[4, EOS, PAD]]),
        response_mask=torch.tensor([[1.0, 1, 0]]),
        has_eos=torch.tensor([True]),
    )
    ids, attention, pos = batch.sequence()
    assert ids.tolist() == [[PAD, 3, 4, EOS, PAD]]
    assert attention.tolist() == [[0, 1, 1, 1, 0]]
    assert pos.tolist() == [[0, 0, 1, 2, 2]]


def test_next_token_filters():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(200, 1)
    assert next_token(logits, 0, 0, 1.0, None).unique().tolist() == [1]  # greedy
    gen = torch.Generator().manual_seed(0)
    assert next_token(logits, 5.0, 1, 1.0, gen).unique().tolist() == [1]  # top-k 1 is greedy at any temperature
    assert set(next_token(logits, 5.0, 2, 1.0, gen).unique().tolist()) == {1, 3}
    # top-p: token 1 alone holds ~64% of the mass, tokens 1 and 3 ~88%.
    assert next_token(logits, 1.0, 0, 0.5, gen).unique().tolist() == [1]
    assert set(next_token(logits, 1.0, 0, 0.8, gen).unique().tolist()) == {1, 3}
    a = next_token(logits, 1.0, 0, 1.0, torch.Generator().manual_seed(3))
    b = next_token(logits, 1.0, 0, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.models.embedded import resolve_embedded

    path = resolve_embedded("embedded:tiny")
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_batched_left_padded_sampling_matches_one_by_one(tiny):
    """Left padding, position ids and the KV cache must not change what each row generates."""
    model, tokenizer = tiny
    prompts = [[5, 9, 30, 41, 7, 12], [33, 8], [100, 101, 102]]
    settings = dict(
        max_new_tokens=12,
        temperature=0,
        top_k=0,
        top_p=1.0,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
    )
    query, query_mask = left_pad(prompts, tokenizer.pad_token_id)
    batched = sample(model, query, query_mask, **settings)
    for row, prompt in enumerate(prompts):
        single = sample(model, torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long), **settings)
        width = single.shape[1]
        assert batched[row, :width].tolist() == single[0].tolist()


def test_sampling_matches_transformers_generate(tiny):
    model, tokenizer = tiny
    query = torch.tensor([[5, 9, 30, 41]])
    ours = sample(
        model,
        query,
        torch.ones_like(query),
        max_new_tokens=10,
        temperature=0,
        top_k=0,
        top_p=1.0,
        eos_id=-1,
        pad_id=tokenizer.pad_token_id,
    )
    theirs = model.generate(
        query,
        attention_mask=torch.ones_like(query),
        max_new_tokens=10,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert ours[0].tolist() == theirs[0, 4:].tolist()


def test_tokens_after_eos_are_padding(tiny):
    model, tokenizer = tiny
    query, query_mask = left_pad([[5, 9], [30, 41, 7]], tokenizer.pad_token_id)
    response = sample(
        model,
        query,
        query_mask,
        max_new_tokens=40,
        temperature=1.5,
        top_k=0,
        top_p=1.0,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(1),
    )
    mask, _ = response_mask(response, tokenizer.eos_token_id)
    assert (response[mask == 0] == tokenizer.pad_token_id).all()
