"""Scoring responses with a learned reward model, batched: used by the reward stage's evaluation, ppo and compare."""

from __future__ import annotations

from typing import Any


def render(tokenizer, prompt: str | list[dict[str, str]] | None, response: str | list[dict[str, str]]) -> str:
    """The text a reward model scores for (prompt, response), formatted the way the reward stage trained it.

    Conversations go through the chat template; plain strings are concatenated and end with the EOS token.
    """
    if isinstance(response, list) or isinstance(prompt, list):
        messages = list(prompt or [])
        messages += response if isinstance(response, list) else [{"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    text = (prompt or "") + response
    return text if text.endswith(tokenizer.eos_token) else text + tokenizer.eos_token


def render_prompt(tokenizer, prompt: str | list[dict[str, str]] | None) -> str:
    """The text `render` puts before the response: the prompt with the assistant turn opened (chat template), or the
    plain prompt string."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return prompt or ""


def reward_scores(model, tokenizer, texts: list[str], batch_size: int = 32, max_length: int | None = None):
    """One scalar reward per text from a sequence-classification model, as a float32 CPU tensor.

    Texts are sorted by length before batching so that padding (and wasted compute) stays small.
    """
    import torch

    device = next(model.parameters()).device
    encoded = [
        tokenizer(t, add_special_tokens=False, truncation=max_length is not None, max_length=max_length)["input_ids"]
        for t in texts
    ]
    scores = torch.empty(len(texts), dtype=torch.float32)
    with torch.inference_mode():
        for index, ids, mask in length_batches(encoded, tokenizer.pad_token_id, batch_size):
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            scores[index] = logits[:, 0].float().cpu()
    return scores


def length_batches(encoded: list[list[int]], pad_id: int, batch_size: int):
    """Yields (row indices, right-padded ids, attention mask) over `encoded` sorted by length, so that padding (and
    wasted compute) stays small; the indices say where each batch's results go."""
    import torch

    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in index)
        ids = torch.full((len(index), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(index), width), dtype=torch.long)
        for row, i in enumerate(index):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, : len(encoded[i])] = 1
        yield index, ids, mask


def preference_scores(model, tokenizer, pairs: list[dict[str, Any]], batch_size: int = 32):
    """The reward of every pair's chosen and rejected reply, as two float32 CPU tensors in pair order (from a
    classifier reward model or an implicit one)."""
    from rlhf.rewards.implicit import ImplicitReward, implicit_text_scores

    if isinstance(model, ImplicitReward):
        prompts = [render_prompt(tokenizer, p.get("prompt")) for p in pairs]
        return tuple(
            implicit_text_scores(
                model, tokenizer, prompts, [render(tokenizer, p.get("prompt"), p[side]) for p in pairs], batch_size
            )
            for side in ("chosen", "rejected")
        )
    chosen = reward_scores(
        model, tokenizer, [render(tokenizer, p.get("prompt"), p["chosen"]) for p in pairs], batch_size
    )
    rejected = reward_scores(
        model, tokenizer, [render(tokenizer, p.get("prompt"), p["rejected"]) for p in pairs], batch_size
    )
    return chosen, rejected


def summarize_preferences(chosen, rejected) -> dict[str, float]:
    """Preference accuracy (chosen scored above rejected; ties count as half) and mean reward margin."""
    wins = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    return {
        "accuracy": wins.mean().item(),
        "margin_mean": (chosen - rejected).mean().item(),
        "chosen_mean": chosen.mean().item(),
        "rejected_mean": rejected.mean().item(),
        "pairs": len(chosen),
    }


def accuracy_by_category(chosen, rejected, categories: list[str | None]) -> dict[str, dict[str, float]]:
    """Preference accuracy, mean margin and pair count per category, in category-name order.

    Args:
        chosen: Reward of each pair's chosen reply (1-D tensor).
        rejected: Reward of each pair's rejected reply, same order.
        categories: Each pair's category; pairs whose category is None are left out.

    Returns:
        `{category: {"accuracy": ..., "margin": ..., "n": ...}}`; empty when no pair has a category.
    """
    if len(categories) != len(chosen):
        raise ValueError(f"got {len(categories)} categories for {len(chosen)} pairs; pass one per pair")
    found: dict[str, dict[str, float]] = {}
    for category in sorted({c for c in categories if c is not None}):
        index = [i for i, c in enumerate(categories) if c == category]
        summary = summarize_preferences(chosen[index], rejected[index])
        found[category] = {"accuracy": summary["accuracy"], "margin": summary["margin_mean"], "n": len(index)}
    return found
