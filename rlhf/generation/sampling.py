"""Rollouts: batched sampling with the KV cache from left-padded prompts, and the masks that go with it.

The sampling loop keeps only the sampled token ids and, on request, each token's log-probability and entropy
(never per-step full-vocabulary logits). It is our own loop rather than `model.generate` so that every step is
visible, cheap in Python overhead (`rlhf.generation.decoding`), seeded by an explicit generator, and able to keep stepping
until every rank is done (ZeRO-3 needs all ranks in every forward).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """One batch of prompts and their sampled responses.

    Attributes:
        query: [B, P] prompt ids, left-padded.
        query_mask: [B, P] 1 for prompt tokens, 0 for padding.
        response: [B, R] sampled ids; positions after EOS hold the pad id.
        response_mask: [B, R] 1 for response tokens up to and including EOS.
        has_eos: [B] whether the response ended with EOS within the budget.
    """

    query: torch.Tensor
    query_mask: torch.Tensor
    response: torch.Tensor
    response_mask: torch.Tensor
    has_eos: torch.Tensor

    def sequence(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask, position_ids) of prompt + response, for one forward pass."""
        input_ids = torch.cat([self.query, self.response], dim=1)
        attention_mask = torch.cat([self.query_mask, self.response_mask.long()], dim=1)
        return input_ids, attention_mask, positions(attention_mask)

    def right_aligned(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask, position_ids, shift) of prompt + response with each row's real tokens at the
        right end: the padding of prompt and response together on the left, so the width is the longest row's
        prompt plus response (not the longest prompt plus the longest response, which are often different rows).

        Response token t of row i is then at column `width - R + t + shift[i]` (R the response width): the last R
        columns still hold every row's response, each moved right by `shift = R - its real length`. Position ids
        are the same as `sequence`'s on every real token.
        """
        ids, mask, _ = self.sequence()
        width = ids.shape[1]
        shift = self.response.shape[1] - self.response_mask.sum(1).long()
        # Rolling each row right by its shift brings the post-EOS padding round to the front, where it is masked.
        source = (torch.arange(width, device=ids.device)[None, :] - shift[:, None]) % width
        ids, mask = ids.gather(1, source), mask.gather(1, source)
        # Keep room for the response window and the position before it (at least R + 1 columns).
        keep = min(width, max(int(mask.sum(1).max()), self.response.shape[1] + 1))
        ids, mask = ids[:, width - keep :], mask[:, width - keep :]
        return ids, mask, positions(mask), shift

    def select(self, index: torch.Tensor) -> Batch:
        """The rows `index` of this batch."""
        return Batch(
            self.query[index],
            self.query_mask[index],
            self.response[index],
            self.response_mask[index],
            self.has_eos[index],
        )

    def trim(self) -> tuple[Batch, slice]:
        """This batch without the columns that are padding in every row, and the response columns it keeps.

        Drops the leading prompt columns that no row uses (left padding: they are all in front) and the trailing
        response columns after every row's EOS, so that a forward over a few rows runs at their own width, not at
        the step's. A dropped column is a masked key for every row, and `positions` of the trimmed mask equals the
        original ids on every kept column (the dropped prompt columns add nothing to the cumulative sum), so the
        real tokens' outputs are unchanged up to float rounding.

        Returns:
            The trimmed batch, and the slice of response columns kept, for per-token tensors of the step's
            response width ([B, R] log-probs, values, advantages, returns).
        """
        used_prompt = self.query_mask.any(0)
        prompt_start = int(used_prompt.int().argmax()) if bool(used_prompt.any()) else used_prompt.shape[0]
        used_response = self.response_mask.bool().any(0)
        # The last column with a real token in any row (every response has at least its first token).
        response_end = used_response.shape[0] - int(used_response.flip(0).int().argmax())
        columns = slice(0, response_end)
        trimmed = Batch(
            self.query[:, prompt_start:],
            self.query_mask[:, prompt_start:],
            self.response[:, columns],
            self.response_mask[:, columns],
            self.has_eos,
        )
        return trimmed, columns


def encode_prompts(tokenizer, prompts: list[list[dict[str, str]]], max_prompt_length: int) -> list[list[int]]:
    """Token ids of each prompt rendered with the chat template and the generation prompt.

    Prompts longer than `max_prompt_length` keep their end (the latest turns and the assistant header).
    """
    encoded = []
    for messages in prompts:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        encoded.append(ids[-max_prompt_length:])
    return encoded


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pads id lists into (ids [B, P], mask [B, P])."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids, mask


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def response_mask(response: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [B, R] of tokens up to and including the first EOS, has_eos [B])."""
    is_eos = response == eos_id
    seen_before = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    return (~seen_before).float(), is_eos.any(-1)


def next_token(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Samples one token per row from last-position logits [B, V] (greedy when temperature is 0)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the mass before it already reaches top_p (the most likely token always stays).
        drop = (cumulative - sorted_logits.softmax(-1)) >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass
class Sampled:
    """What `sample` returns with `stats=True`: ids plus each sampled token's log-probability and entropy.

    Both come from the temperature-scaled full distribution (fp32 logits divided by the temperature, as in the
    training forward), the distribution PPO's ratio is taken against, computed from the very logits each token was
    drawn from; ppo and compare refuse top-k / top-p, whose samples would not come from it. 0 after a row's EOS.
    """

    tokens: torch.Tensor
    logprobs: torch.Tensor
    entropy: torch.Tensor


@torch.no_grad()
def sample(
    model,
    query: torch.Tensor,
    query_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator | None = None,
    all_done: Callable[[bool], bool] | None = None,
    decoder: str = "auto",
    stats: bool = False,
) -> torch.Tensor | Sampled:
    """Samples responses with the KV cache; returns [B, R] ids with the pad id after each row's EOS.

    Args:
        model: A causal LM (called with its cache, `position_ids` and `logits_to_keep` on the "hf" path).
        query, query_mask: Left-padded prompts.
        max_new_tokens, temperature, top_k, top_p: Decoding settings (temperature 0: greedy).
        eos_id, pad_id: End-of-sequence and padding ids.
        generator: The seeded sampling generator.
        all_done: In a multi-process launch, takes this rank's "finished" flag and returns whether every rank is
            finished, so ranks keep stepping together (each forward is collective under ZeRO-3).
        decoder: "auto" (the lean KV-cache decoder where it applies: Llama, Mistral, Qwen2/3, Gemma 1/2/3, Phi-3;
            on CUDA as static-cache CUDA-graph steps; see `rlhf.generation.decoding`) or "hf" (the model's own
            forward); "lean" and "static" pick one lean path on any device (benchmark and tests).
        stats: Also return each token's log-probability and entropy (a `Sampled`); needs temperature > 0.
    """
    from rlhf.generation.decoding import make_decoder

    if stats and temperature == 0:
        raise ValueError("sample: stats=True needs temperature > 0 (greedy decoding has no sampling distribution)")
    steps = make_decoder(model, query.shape[0], query.shape[1] + max_new_tokens, decoder)
    position_ids = positions(query_mask)
    logits = steps.prefill(query, query_mask, position_ids)
    finished = torch.zeros(query.shape[0], dtype=torch.bool, device=query.device)
    tokens, logprobs, entropies = [], [], []
    # Unfiltered sampling with statistics draws from the same log-softmax the statistics need (one pass, not two).
    shared = stats and not top_k and top_p >= 1.0
    for _ in range(max_new_tokens):
        if stats:
            logp = torch.log_softmax(logits.float() / temperature, dim=-1)
            probs = logp.exp()
        if shared:
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        else:
            token = next_token(logits, temperature, top_k, top_p, generator)
        token = token.masked_fill(finished, pad_id)
        if stats:
            live = (~finished).to(logp.dtype)
            logprobs.append(logp.gather(-1, token[:, None]).squeeze(-1) * live)
            entropies.append(-(probs * logp).sum(-1) * live)
        tokens.append(token)
        finished |= token == eos_id
        done = bool(finished.all())
        if (all_done(done) if all_done is not None else done) or len(tokens) == max_new_tokens:
            break
        position_ids = position_ids[:, -1:] + 1
        logits = steps.step(token, position_ids)
    ids = torch.stack(tokens, dim=1)
    return Sampled(ids, torch.stack(logprobs, 1), torch.stack(entropies, 1)) if stats else ids
