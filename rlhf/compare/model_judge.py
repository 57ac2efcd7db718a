"""A local causal LM as a pairwise judge: the rubric prompt shows both replies, the judge's next-token log-probability
of "A" against "B" is its preference.

Why log-probabilities rather than a generated verdict: one forward pass per pair and no sampling, so the verdict is
deterministic and cheap; every pair gets a graded preference (no unparseable answers, which small models produce
most of the time); and the position swap of `rlhf.compare.pairwise.judge_pair` applies to a number rather than to
text. A judge that needs to reason before its verdict (chain of thought) is better served by the plug-in form, which
can generate.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("rlhf")

ANSWERS = ("A", "B")
"""The verdict tokens: the first token of each string after the rubric (with the chat template's assistant prefix)."""


class ModelJudge:
    """A causal LM judging pairs with a rubric; call it as a `rlhf.compare.pairwise.Preference`.

    Args:
        path: A model directory saved with `save_pretrained` (or a hub id, or 'embedded:NAME').
        rubric: The prompt, with the fields {prompt}, {first} and {second}; it should end by asking for "A" or "B".
        dtype: Dtype to load the model in.
        batch_size: Pairs per forward pass.
        trust_remote_code: Allow the model's code from the hub to run (the judge entry's setting).
    """

    def __init__(self, path: str, rubric: str, dtype: str, batch_size: int, trust_remote_code: bool = False) -> None:
        import torch
        from transformers import AutoTokenizer

        from rlhf.config import ModelConfig
        from rlhf.models.loading import ModelLoadError, load_causal_lm, resolve_model_path

        resolved = resolve_model_path(path)
        self.device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        model_cfg = ModelConfig(name_or_path=resolved, dtype=dtype, trust_remote_code=trust_remote_code)
        self.model = load_causal_lm(model_cfg, resolved).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(resolved, trust_remote_code=trust_remote_code)
        self.rubric = rubric
        self.batch_size = batch_size
        answer_ids = [self.tokenizer(a, add_special_tokens=False)["input_ids"][:1] for a in ANSWERS]
        if any(not ids for ids in answer_ids) or answer_ids[0] == answer_ids[1]:
            raise ModelLoadError(f"model judge {path}: 'A' and 'B' do not start with distinct tokens")
        self.answer_ids = [ids[0] for ids in answer_ids]
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        limits = [getattr(self.model.config, "max_position_embeddings", None), self.tokenizer.model_max_length]
        self.max_length = min(int(v) for v in limits if v is not None and 0 < v < 10**7)
        self.truncated = 0

    def text(self, prompt: str, first: str, second: str) -> str:
        """The judge's input for one ordered pair: the rubric, in the chat template when the tokenizer has one."""
        content = self.rubric.format(prompt=prompt, first=first, second=second)
        if self.tokenizer.chat_template is None:
            return content
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def __call__(self, prompts: list[str], first: list[str], second: list[str]) -> list[float]:
        """log P("A") - log P("B") for each ordered pair: > 0 prefers the first reply."""
        import torch

        encoded = [
            self.tokenizer(self.text(p, a, b), add_special_tokens=False)["input_ids"]
            for p, a, b in zip(prompts, first, second, strict=True)
        ]
        for i, ids in enumerate(encoded):
            if len(ids) > self.max_length:
                # Keep the end: the replies and the question the verdict answers; the customer message goes first.
                encoded[i] = ids[-self.max_length :]
                self.truncated += 1
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out = [0.0] * len(encoded)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                width = max(len(encoded[i]) for i in rows)
                ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):  # left padding: the last position is every row's next token
                    ids[r, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                    mask[r, width - len(encoded[i]) :] = 1
                positions = (mask.cumsum(1) - 1).clamp(min=0)
                logits = (
                    self.model(
                        input_ids=ids.to(self.device),
                        attention_mask=mask.to(self.device),
                        position_ids=positions.to(self.device),
                    )
                    .logits[:, -1]
                    .float()
                )
                logp = torch.log_softmax(logits, dim=-1)
                margin = (logp[:, self.answer_ids[0]] - logp[:, self.answer_ids[1]]).cpu().tolist()
                for r, i in enumerate(rows):
                    out[i] = margin[r]
        return out
