"""Implicit reward models: a causal LM and its reference score a reply as beta * log(pi(y|x) / pi_ref(y|x)).

This is the reward a DPO-trained model defines (Rafailov et al. 2023, section 5; RewardBench scores DPO models this
way). The reward stage trains one with an `implicit` block (`reward.implicit: {beta: ..}`) (the Bradley-Terry loss on these scores is DPO's loss);
any pair of a DPO model and its starting model can be declared one by writing the marker file next to its weights.

A directory is an implicit reward model when it holds a causal LM (full weights, or a PEFT adapter) and
`implicit_reward.json` (read and written by `rlhf.rewards.implicit_marker`, which imports no torch):

    {"beta": 0.5, "reference": "../../sft/final"}

`reference` is the model the log-ratio is taken against: a path relative to the directory (so a run directory can be
moved whole), an absolute path, a hub id, or null for an adapter whose base, with the adapter off, is the reference.

Why it exists: the score is a sum over the reply's tokens of how much more likely the trained model finds each token
than its reference, so it inherits what the language model already predicts from the prompt. On the shipped
brand-voice pairs (seed 42) a one-logit classifier trained from the same sft model told a reply with the wrong
customer name or product from the right one in 0.80 and 0.53 of held-out pairs; the implicit reward in 1.00 and 0.93.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf.rewards.implicit_marker import MARKER, is_implicit, read_marker, same_model, write_marker
from rlhf.rewards.scoring import length_batches

__all__ = [
    "MARKER",
    "ImplicitReward",
    "implicit_text_scores",
    "is_implicit",
    "load_implicit_reward",
    "read_marker",
    "write_marker",
]


class ImplicitReward(torch.nn.Module):
    """A reward model made of a causal LM and its frozen reference (both in inference mode).

    Attributes:
        policy: The trained causal LM (a PEFT model when `reference` is None).
        reference: The reference causal LM, or None: `policy` with its adapter disabled.
        beta: The scale of the log-ratio.
        path: The directory it was loaded from.
        shares_reference: `reference` is a model its caller also holds (ppo's reference policy), passed in rather
            than loaded: `prepare` then takes the caller's prepared model instead of preparing a second one.
    """

    def __init__(self, policy, reference, beta: float, path: str, shares_reference: bool = False) -> None:
        super().__init__()
        self.policy = policy
        self.reference = reference
        self.beta = beta
        self.path = path
        self.shares_reference = shares_reference

    @property
    def config(self):
        """The policy's model config (pad id, vocabulary size), as a classifier reward model's `config` is read."""
        return self.policy.config

    def prepare(self, prepare_frozen, shared=None) -> None:
        """Applies `prepare_frozen` (e.g. `rlhf.distributed.prepare_frozen`: a device move, or a ZeRO-3 inference
        engine) to the policy and the reference, which then stand in for them.

        Args:
            shared: With `shares_reference`, the caller's own prepared copy of the reference (required then): it
                replaces the reference, which is not prepared a second time.
        """
        self.policy = prepare_frozen(self.policy)
        if self.shares_reference:
            if shared is None:
                raise ValueError(f"implicit reward {self.path}: its reference is shared, pass the prepared one")
            self.reference = shared
        elif self.reference is not None:
            self.reference = prepare_frozen(self.reference)

    @torch.no_grad()
    def score_tokens(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """beta * sum over the response tokens of log pi - log pi_ref: [B] float32 on the CPU.

        Args:
            input_ids: [B, T] prompt and response ids (any padding, with `attention_mask` marking the real tokens).
            attention_mask: [B, T] 1 for real tokens.
            response_mask: [B, T] 1 for the response tokens that are scored (their log-probabilities are read from
                the position before each); 0 for the prompt and padding.
            position_ids: [B, T] or None (then the model derives them; pass them for left-padded rows).
        """
        device = next(self.policy.parameters()).device
        inputs = dict(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
        if position_ids is not None:
            inputs["position_ids"] = position_ids.to(device)
        labels = inputs["input_ids"][:, 1:]
        mask = response_mask[:, 1:].to(device).float()

        def logps(model) -> torch.Tensor:
            logits = model(**inputs).logits[:, :-1].float()
            token = torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            return (token * mask).sum(-1)

        policy = logps(self.policy)
        if self.reference is None:  # the adapter's base (inside a DeepSpeed engine, its module's)
            with getattr(self.policy, "module", self.policy).disable_adapter():
                reference = logps(self.policy)
        else:
            reference = logps(self.reference)
        return (self.beta * (policy - reference)).float().cpu()


def load_implicit_reward(
    path: str, dtype: str = "float32", trust_remote_code: bool = False, shared_reference=None
) -> ImplicitReward:
    """Loads an implicit reward model (policy and reference) in inference mode.

    Args:
        shared_reference: (directory, model): a causal LM the caller already holds, loaded from `directory` in
            `dtype`. When the marker's reference is that directory, the model serves as the reference instead of a
            second copy of its weights (ppo's reference policy is usually the implicit reward's reference: both are
            the sft model).

    Raises:
        ValueError: The marker is malformed, or it names no reference and the directory holds no adapter.
    """
    from transformers import AutoModelForCausalLM

    beta, reference_path = read_marker(path)
    dtype = getattr(torch, dtype)
    if (Path(path) / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        policy = AutoPeftModelForCausalLM.from_pretrained(
            path, is_trainable=False, dtype=dtype, trust_remote_code=trust_remote_code
        )
        if reference_path is not None:  # an adapter trained against another model than its own base
            policy = policy.merge_and_unload()
    else:
        policy = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    if reference_path is None and not hasattr(policy, "disable_adapter"):
        raise ValueError(f"{path}/{MARKER}: reference is null, which needs a PEFT adapter directory")
    reference, shares = None, False
    if reference_path is not None and shared_reference is not None:
        shares = same_model(reference_path, shared_reference[0])
        reference = shared_reference[1] if shares else None
    if reference_path is not None and not shares:
        reference = AutoModelForCausalLM.from_pretrained(
            reference_path, dtype=dtype, trust_remote_code=trust_remote_code
        )
    model = ImplicitReward(policy, reference, beta, str(path), shares_reference=shares)
    model.eval().requires_grad_(False)
    return model


def implicit_text_scores(
    model: ImplicitReward, tokenizer, prompts: list[str], texts: list[str], batch_size: int = 32
) -> torch.Tensor:
    """Scores rendered conversations: `texts[i]` is `prompts[i]` (the rendered prompt, ending where the reply
    starts) followed by the reply. Prompt and reply are tokenized apart and joined, as DPO training tokenizes
    them, so no token straddles the boundary. Rows are sorted by length before batching, as `reward_scores` does.

    Raises:
        ValueError: A text does not start with its prompt (the chat template renders the prompt differently alone).
    """
    encoded, starts = [], []
    for prompt, text in zip(prompts, texts, strict=True):
        if not text.startswith(prompt):
            raise ValueError("implicit reward: the rendered conversation does not start with its rendered prompt")
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        encoded.append(prompt_ids + tokenizer(text[len(prompt) :], add_special_tokens=False)["input_ids"])
        starts.append(len(prompt_ids))
    scores = torch.empty(len(texts), dtype=torch.float32)
    for index, ids, mask in length_batches(encoded, tokenizer.pad_token_id, batch_size):
        response = mask * (torch.arange(ids.shape[1])[None, :] >= torch.tensor([starts[i] for i in index])[:, None])
        scores[index] = model.score_tokens(ids, mask, response)
    return scores
