"""Generating and scoring responses on held-out prompts: the ppo stage's closing check and the compare report's core.

Every model samples on the same prompts with the same decoding settings and a fixed seed, through the same batched
rollout code the ppo loop uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.distributed import all_ranks_done
from rlhf.generation.sampling import Batch, encode_prompts, left_pad, response_mask, sample
from rlhf.ppo import functional as F
from rlhf.ppo.models import response_logits


@dataclass
class Generations:
    """Responses of one model to a list of prompts, in prompt order."""

    batches: list[Batch]
    texts: list[str]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[list[dict[str, str]]],
    *,
    max_prompt_length: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    device: torch.device | str = "cpu",
    all_done=None,
    decoder: str = "auto",
) -> Generations:
    """Samples one response per prompt (temperature 0: greedy), in batches of prompts in the given order."""
    encoded = encode_prompts(tokenizer, prompts, max_prompt_length)
    generator = torch.Generator().manual_seed(seed)
    batches, texts = [], []
    for start in range(0, len(encoded), batch_size):
        query, query_mask = left_pad(encoded[start : start + batch_size], tokenizer.pad_token_id)
        query, query_mask = query.to(device), query_mask.to(device)
        response = sample(
            model,
            query,
            query_mask,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id,
            generator=generator,
            all_done=all_done,
            decoder=decoder,
        )
        mask, has_eos = response_mask(response, tokenizer.eos_token_id)
        batches.append(Batch(query, query_mask, response, mask.to(device), has_eos))
        texts.extend(tokenizer.batch_decode(response, skip_special_tokens=True))
    return Generations(batches, texts)


@torch.no_grad()
def sequence_kl(model, reference, batch: Batch, temperature: float = 1.0, reference_is_disabled_adapter: bool = False):
    """Per-sequence KL(model || reference) estimated on the model's own samples: the summed per-token log-ratio.

    Args:
        reference: The reference causal LM, or None with `reference_is_disabled_adapter` to use `model` with its
            PEFT adapter disabled.
    """
    input_ids, attention_mask, position_ids = batch.sequence()
    length = batch.response.shape[1]
    temperature = temperature or 1.0
    logp = F.logprobs_from_logits(
        response_logits(model, input_ids, attention_mask, position_ids, length), batch.response, temperature
    )
    if reference is None and reference_is_disabled_adapter:
        with model.disable_adapter():
            ref_logits = response_logits(model, input_ids, attention_mask, position_ids, length)
    else:
        ref_logits = response_logits(reference, input_ids, attention_mask, position_ids, length)
    ref_logp = F.logprobs_from_logits(ref_logits, batch.response, temperature)
    return F.masked_sum(logp - ref_logp, batch.response_mask, dim=1)


def score_generations(
    terms, generations: Generations, prompts: list[list[dict[str, str]]], tokenizer, info: list[dict] | None = None
):
    """Scores generations with every reward term: {term name: [N] tensor} plus 'total' (weighted sum).

    `info` holds each prompt's row metadata (one dict per prompt, in the same order), for terms that take it.
    """
    from rlhf.rewards.sources import last_user_message

    prompt_texts = [last_user_message(p) for p in prompts]
    scores: dict[str, list[torch.Tensor]] = {term.name: [] for term in terms}
    offset = 0
    for batch in generations.batches:
        n = batch.response.shape[0]
        for term in terms:
            scores[term.name].append(
                term.score(
                    batch,
                    prompt_texts[offset : offset + n],
                    generations.texts[offset : offset + n],
                    tokenizer,
                    None if info is None else info[offset : offset + n],
                ).cpu()
            )
        offset += n
    merged = {name: torch.cat(values) for name, values in scores.items()}
    merged["total"] = sum(term.weight * merged[term.name] for term in terms)
    return merged


def evaluate_against_reference(
    policy,
    ref_policy,
    tokenizer,
    terms,
    prompts,
    cfg,
    accelerator,
    info: list[dict] | None = None,
    *,
    reference: bool = True,
) -> dict[str, float]:
    """Held-out check at the end of ppo: policy vs reference (the sft model) on the eval prompts (`info`: their rows'
    extra columns, for reward functions that take them).

    Both sample with the recipe's rollout settings and the same seed; reported: mean and standard deviation of each
    reward term for both, the mean per-sequence KL of the policy to the reference, lengths and EOS rates. With
    `reference` false only the policy answers (no reference scores, no gain in its units): what the ppo stage's
    in-loop frontier points need (`rlhf.ppo.frontier`).
    """
    settings = dict(
        max_prompt_length=cfg.data.max_prompt_length,
        max_new_tokens=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature,
        top_k=cfg.rollout.top_k,
        top_p=cfg.rollout.top_p,
        batch_size=cfg.training.batch_size * 2,
        seed=cfg.seed,
        device=accelerator.device,
        all_done=all_ranks_done(accelerator),
        decoder=cfg.rollout.decoder,
    )
    policy.eval()
    results: dict[str, float] = {"eval_prompts": len(prompts)}
    for name, model in (("policy", policy), ("reference", ref_policy))[: 2 if reference else 1]:
        if model is None:
            with policy.disable_adapter():
                generations = generate(policy, tokenizer, prompts, **settings)
        else:
            generations = generate(model, tokenizer, prompts, **settings)
        scores = score_generations(terms, generations, prompts, tokenizer, info)
        for term, values in scores.items():
            results[f"eval_{name}_{term}_mean"] = values.mean().item()
            results[f"eval_{name}_{term}_std"] = values.std().item() if len(values) > 1 else 0.0
        lengths = [b.response_mask.sum(1) for b in generations.batches]
        results[f"eval_{name}_length_mean"] = torch.cat(lengths).float().mean().item()
        results[f"eval_{name}_eos_rate"] = torch.cat([b.has_eos for b in generations.batches]).float().mean().item()
        if name == "policy":
            kls = [
                sequence_kl(policy, ref_policy, b, cfg.rollout.temperature, ref_policy is None).cpu()
                for b in generations.batches
            ]
            results["eval_kl_to_reference_mean"] = torch.cat(kls).mean().item()
            results["eval_samples"] = [
                {"prompt": prompts[i][-1]["content"], "response": generations.texts[i]}
                for i in range(min(3, len(prompts)))
            ]
    if not reference:
        return results
    sft_std = results["eval_reference_total_std"] or 1e-8
    results["eval_reward_gain_in_reference_std"] = (
        results["eval_policy_total_mean"] - results["eval_reference_total_mean"]
    ) / sft_std
    return results
