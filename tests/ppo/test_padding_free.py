"""Padding-free ppo updates: a micro-batch is computed at its own width (`Batch.trim`) with rows bucketed by length
(`ppo._by_length`), which never drops a real token and gives the padded update's gradient up to float rounding."""

from __future__ import annotations

import pytest
import torch

from rlhf.config import PPOStage
from rlhf.generation.sampling import Batch, left_pad, positions, response_mask
from rlhf.ppo import functional as F
from rlhf.ppo.models import ActorCritic
from rlhf.ppo.state import Estimate, PPOState, Rollout, Scored, Setup
from rlhf.rewards.sources import RunningMoments
from rlhf.stages import ppo

# Prompt and response lengths that differ a lot from row to row, so that every micro-batch of two has padding the
# step's width would add (the longest prompt, 20, and the longest response, 12, are in different rows).
PROMPT_LENGTHS = [20, 2, 5, 3, 14, 1, 9, 4]
RESPONSE_LENGTHS = [1, 12, 3, 2, 7, 1, 10, 5]


@pytest.fixture(scope="module")
def tiny_path():
    from rlhf.models.embedded import resolve_embedded

    return resolve_embedded("embedded:tiny")


def _batch(pad: int, eos: int, generator: torch.Generator) -> Batch:
    query, query_mask = left_pad(
        [torch.randint(3, 200, (n,), generator=generator).tolist() for n in PROMPT_LENGTHS], pad
    )
    response = torch.randint(3, 200, (len(RESPONSE_LENGTHS), max(RESPONSE_LENGTHS)), generator=generator)
    for row, length in enumerate(RESPONSE_LENGTHS):
        response[row, length - 1] = eos
        response[row, length:] = pad
    mask, has_eos = response_mask(response, eos)
    return Batch(query, query_mask, response, mask, has_eos)


def test_trim_keeps_every_real_token_and_their_positions():
    batch = _batch(0, 1, torch.Generator().manual_seed(0))
    ids, attention, position_ids = batch.sequence()
    for rows in ([0, 1], [2, 3], [5], [1, 6, 7], list(range(8))):
        index = torch.tensor(rows)
        part, columns = batch.select(index).trim()
        assert part.query.shape[1] == max(PROMPT_LENGTHS[r] for r in rows)
        assert part.response.shape[1] == max(RESPONSE_LENGTHS[r] for r in rows) == columns.stop
        t_ids, t_attention, t_positions = part.sequence()
        # The kept columns are the last `prompt width` prompt columns and the first response columns.
        kept = torch.cat(
            [
                torch.arange(batch.query.shape[1] - part.query.shape[1], batch.query.shape[1]),
                batch.query.shape[1] + torch.arange(columns.stop),
            ]
        )
        torch.testing.assert_close(t_ids, ids[index][:, kept], rtol=0, atol=0)
        torch.testing.assert_close(t_attention, attention[index][:, kept], rtol=0, atol=0)
        torch.testing.assert_close(t_positions, position_ids[index][:, kept], rtol=0, atol=0)
        # Nothing real was dropped: every row keeps all its real tokens.
        assert int(t_attention.sum()) == int(attention[index].sum())
        torch.testing.assert_close(t_positions, positions(t_attention), rtol=0, atol=0)


def test_right_aligned_rows_keep_their_tokens_positions_and_responses():
    batch = _batch(0, 1, torch.Generator().manual_seed(0))
    ids, attention, position_ids = batch.sequence()
    r_ids, r_attention, r_positions, shift = batch.right_aligned()
    width, length = r_ids.shape[1], batch.response.shape[1]
    assert width == max(p + r for p, r in zip(PROMPT_LENGTHS, RESPONSE_LENGTHS, strict=True)) == 21
    assert shift.tolist() == [length - r for r in RESPONSE_LENGTHS]
    for row, (p, r) in enumerate(zip(PROMPT_LENGTHS, RESPONSE_LENGTHS, strict=True)):
        # The row's real tokens, in order and with their positions, end at the last column; padding before them.
        real = attention[row].bool()
        assert r_attention[row].tolist() == [0] * (width - p - r) + [1] * (p + r)
        torch.testing.assert_close(r_ids[row, width - p - r :], ids[row, real], rtol=0, atol=0)
        torch.testing.assert_close(r_positions[row, width - p - r :], position_ids[row, real], rtol=0, atol=0)
        # Response token t sits at window column t + shift (the window: the last `length` columns).
        window = r_ids[row, width - length :]
        torch.testing.assert_close(window[shift[row] : shift[row] + r], batch.response[row, :r], rtol=0, atol=0)


def test_rows_are_bucketed_by_length_within_the_minibatch():
    batch = _batch(0, 1, torch.Generator().manual_seed(0))
    rows = torch.tensor([3, 0, 6, 1, 5, 7])
    bucketed = ppo._by_length(batch, rows)
    assert sorted(bucketed.tolist()) == sorted(rows.tolist())
    lengths = [PROMPT_LENGTHS[r] + RESPONSE_LENGTHS[r] for r in bucketed.tolist()]
    assert lengths == sorted(lengths)
    torch.testing.assert_close(ppo._by_length(batch, rows), bucketed)  # deterministic


def _cfg(accumulation: int) -> PPOStage:
    return PPOStage.model_validate(
        {
            "stage": "ppo",
            "output_dir": "out",
            "data": {"train": "p.jsonl"},
            "rewards": [{"name": "r", "model": "m"}],
            "update": {"epochs": 1, "num_minibatches": 1},
            "training": {
                "batch_size": 8,
                "gradient_accumulation_steps": accumulation,
                "max_grad_norm": None,
                "learning_rate": 1.0,
            },
        }
    )


def _update(tiny_path, accumulation: int, widths: list[int] | None = None) -> dict[str, torch.Tensor]:
    """One `update_policy` call (SGD, learning rate 1, one minibatch of 8 rows split into `accumulation`
    micro-batches, critic and GAE) on a batch of very different lengths; returns each weight's change.

    `widths` collects the sequence width of every training forward of the policy."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(tiny_path)
    critic = AutoModelForSequenceClassification.from_pretrained(tiny_path, num_labels=1)
    model = ActorCritic(policy, critic=critic)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(1)
    batch = _batch(policy.config.pad_token_id, policy.config.eos_token_id, generator)
    with torch.no_grad():
        logits, values = model(*batch.sequence(), batch.response.shape[1])
        logprobs = F.logprobs_from_logits(logits, batch.response)
    noise = torch.randn(3, *logprobs.shape, generator=generator)
    cfg = _cfg(accumulation)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    prepared, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if widths is not None:
        ppo_trunk = policy.model
        ppo_trunk.register_forward_pre_hook(
            lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
        )
    setup = Setup(cfg, accelerator, None, None, [], [], [], [], 1)
    state = PPOState(
        prepared, optimizer, scheduler, F.FixedKLController(0.1), RunningMoments(), torch.Generator().manual_seed(2)
    )
    rollout = Rollout(list(range(8)), batch, logprobs + 0.1 * noise[0], torch.zeros(()))
    zeros = torch.zeros(8)
    scored = Scored([], [], {}, zeros, zeros, logprobs + 0.1 * noise[1], values + 0.1 * noise[2], rollout.logprobs)
    estimate = Estimate(noise[2], values + noise[1], torch.zeros_like(logprobs))
    ppo.update_policy(setup, state, rollout, scored, estimate)
    return {name: p.detach() - before[name] for name, p in model.named_parameters()}


def test_trimmed_bucketed_update_gives_the_padded_update(tiny_path, monkeypatch):
    trimmed = _update(tiny_path, accumulation=4)
    with monkeypatch.context() as patch:
        # The update as it was: every micro-batch at the step's width and layout (prompts left-padded, responses
        # right-padded), rows in the minibatch's random order.
        patch.setattr(Batch, "trim", lambda self: (self, slice(None)))
        patch.setattr(
            Batch, "right_aligned", lambda self: (*self.sequence(), torch.zeros(len(self.response), dtype=torch.long))
        )
        patch.setattr(ppo, "_by_length", lambda batch, rows: rows)
        padded = _update(tiny_path, accumulation=4)
    assert set(trimmed) == set(padded)
    assert any(delta.abs().max() > 0 for delta in padded.values())
    for name, delta in padded.items():
        torch.testing.assert_close(trimmed[name], delta, rtol=1e-4, atol=1e-7, msg=name)


def test_each_micro_batch_is_computed_at_its_own_width(tiny_path):
    widths: list[int] = []
    _update(tiny_path, accumulation=4, widths=widths)
    # Rows sorted by total length and split in pairs: each pair's width is its longer row's prompt plus response,
    # whatever the minibatch's random order (2 + 3, 4 + 5, 9 + 10 and 20 + 1 / 14 + 7 real tokens).
    assert sorted(widths) == [5, 9, 19, 21]
    assert max(widths) < max(PROMPT_LENGTHS) + max(RESPONSE_LENGTHS)  # the step's width: 32
