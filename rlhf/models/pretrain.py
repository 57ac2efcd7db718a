"""Causal-LM pretraining of an embedded model on plain text: a plain, seeded torch loop (nanoGPT style).

The documents are packed into one token stream (each wrapped in BOS ... EOS); a batch is `batch_size` windows of
`block_size + 1` tokens that each start at a document boundary, so a window always holds a whole customer message with
its reply (the model learns to copy names and order numbers from the message into the reply). The loop uses a private
random generator and seed, so the same documents, settings and machine give the same weights.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

logger = logging.getLogger("rlhf")


@dataclass(frozen=True)
class PretrainSettings:
    """How an embedded model is pretrained (part of the build key).

    Attributes:
        steps: optimizer steps.
        batch_size: windows per step.
        block_size: tokens per window (the model predicts each from the ones before).
        learning_rate: peak AdamW learning rate, reached after `warmup_steps` and decayed by a cosine to 10%.
        warmup_steps: linear warm-up steps.
        weight_decay: AdamW weight decay on matrices (not on norms).
        seed: seeds the window sampling (the initial weights have their own seed).
    """

    steps: int
    batch_size: int
    block_size: int
    learning_rate: float
    warmup_steps: int
    weight_decay: float = 0.1
    seed: int = 0


def token_stream(tokenizer, documents: list[str]) -> tuple[list[int], list[int]]:
    """All documents as one list of token ids (BOS text EOS, in order) and the offset where each document starts."""
    encoded = tokenizer(documents, add_special_tokens=False, verbose=False)["input_ids"]
    stream: list[int] = []
    starts: list[int] = []
    for ids in encoded:
        starts.append(len(stream))
        stream += [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
    return stream, starts


def pretrain(model, tokenizer, documents: list[str], settings: PretrainSettings) -> list[float]:
    """Trains `model` in place on `documents` with next-token prediction and returns the loss of every step.

    Args:
        model: a freshly initialised causal LM (`LlamaForCausalLM`).
        tokenizer: its tokenizer (BOS and EOS mark document boundaries).
        documents: plain texts, in a fixed order.
        settings: steps, batch, window, learning-rate schedule and seed.
    """
    import torch

    stream, starts = token_stream(tokenizer, documents)
    # Windows start at document boundaries early enough to be full; pad the tail so the last ones are too.
    tokens = torch.tensor(stream + [tokenizer.eos_token_id] * (settings.block_size + 1), dtype=torch.long)
    first = torch.tensor(starts, dtype=torch.long)
    offsets = torch.arange(settings.block_size + 1)
    generator = torch.Generator().manual_seed(settings.seed)

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate,
        betas=(0.9, 0.95),
    )

    def learning_rate(step: int) -> float:
        if step < settings.warmup_steps:
            return settings.learning_rate * (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return settings.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    losses: list[float] = []
    started = time.time()
    for step in range(settings.steps):
        picks = first[torch.randint(len(starts), (settings.batch_size,), generator=generator)]
        window = tokens[picks[:, None] + offsets]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        logits = model(input_ids=window[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == settings.steps - 1:
            logger.info(
                "pretrain: step %d/%d loss %.3f (%.0f s)", step + 1, settings.steps, losses[-1], time.time() - started
            )
    model.eval()
    return losses


def lm_loss(model, tokenizer, documents: list[str], block_size: int) -> float:
    """Mean next-token loss of `model` over `documents` (packed like the training stream, in order)."""
    import torch

    stream, _ = token_stream(tokenizer, documents)
    tokens = torch.tensor(stream, dtype=torch.long)
    chunks = [tokens[i : i + block_size + 1] for i in range(0, len(tokens) - 1, block_size)]
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for chunk in chunks:
            logits = model(input_ids=chunk[None, :-1]).logits[0]
            total += torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum").item()
            count += len(chunk) - 1
    return total / count
