"""The ppo reward: learned reward models and programmatic functions from reward_models/, weighted and logged.

Programmatic rewards are imported only from the `reward_models` package (`function: brand_voice` means
`reward_models.brand_voice:score`) or from a module the recipe names explicitly (`function: mypkg.rules:score`).
A function that declares a keyword `info` also receives each prompt row's extra columns (everything but the prompt:
e.g. the ground truth `intent` of a held-out prompt), one dict per response; the signature is inspected once, at
load time, so functions without it keep their two-argument form.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from rlhf.config import RewardSourceConfig
from rlhf.generation.sampling import Batch


class RewardError(ValueError):
    """A reward source that cannot be loaded or returned something unusable."""


PROMPT_FIELDS = ("prompt", "messages")
"""The columns that hold a prompt row's prompt; every other column is the row's `info`."""


def row_info(row: dict[str, Any]) -> dict[str, Any]:
    """A prompt row's extra columns (everything but the prompt), as a programmatic reward's `info` sees them."""
    return {key: value for key, value in row.items() if key not in PROMPT_FIELDS}


def load_prompt_info(source: str, split: str, max_rows: int | None) -> list[dict[str, Any]]:
    """The extra columns of every prompt row of a data file or hub split, in file order (see `row_info`).

    Rows are read in the order, and cut at the limit, the prompt loaders use, so `info[i]` belongs to prompt i.
    """
    from rlhf.config import is_data_file

    if is_data_file(source):
        from rlhf.data.formats import read_rows

        rows = []
        for _, row in read_rows(source):
            if max_rows is not None and len(rows) >= max_rows:
                break
            rows.append(row_info(row))
        return rows
    from datasets import load_dataset

    dataset = load_dataset(source, split=split)
    if max_rows is not None:
        dataset = dataset.select(range(min(max_rows, len(dataset))))
    return [row_info(dict(row)) for row in dataset]


def takes_info(function: Callable) -> bool:
    """Whether a programmatic reward accepts the keyword `info` (the prompt rows' extra columns)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    return "info" in parameters and parameters["info"].kind in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )


def reward_module(function: Callable) -> ModuleType | object | None:
    """The module a programmatic reward comes from (for its `explain` and `SHARES_WITH_TRAINING`), if importable;
    for a bound method (a compiled voice spec's `score`), the object it is bound to."""
    if getattr(function, "__self__", None) is not None:
        return function.__self__
    try:
        return importlib.import_module(function.__module__)
    except (ImportError, AttributeError, TypeError):
        return None


def load_reward_function(spec: str) -> Callable[[list[str], list[str]], list[float]]:
    """Imports a programmatic reward: 'name' from reward_models/ (function `score`), or 'package.module:function'."""
    module_name, _, function_name = spec.partition(":")
    if not function_name:
        if "." in module_name:
            raise RewardError(f"reward function '{spec}': name the function explicitly, as 'package.module:function'")
        module_name, function_name = f"reward_models.{module_name}", "score"
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RewardError(f"reward function '{spec}': cannot import {module_name} ({err})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise RewardError(f"reward function '{spec}': {module_name} has no function '{function_name}'")
    return function


@dataclass
class RewardTerm:
    """One weighted reward source, ready to score batches."""

    name: str
    weight: float
    function: Callable[[list[str], list[str]], list[float]] | None = None
    model: torch.nn.Module | None = None
    tokenizer: object | None = None
    shares_tokenizer: bool = False
    wants_info: bool = False  # set from the function's signature

    def __post_init__(self) -> None:
        if self.function is not None:
            self.wants_info = takes_info(self.function)

    @torch.no_grad()
    def score(
        self,
        batch: Batch,
        prompts: list[str],
        responses: list[str],
        policy_tokenizer,
        info: list[dict[str, Any]] | None = None,
    ) -> torch.Tensor:
        """Scores one batch: [B] float32.

        Args:
            info: Each response's prompt-row extra columns (`row_info`), passed on to functions that take `info`;
                None: no extra columns (such functions get one empty dict per response).
        """
        if self.function is not None:
            if self.wants_info:
                info = info if info is not None else [{} for _ in responses]
                if len(info) != len(responses):
                    raise RewardError(f"reward '{self.name}': {len(info)} info rows for {len(responses)} responses")
                values = self.function(prompts, responses, info=info)
            else:
                values = self.function(prompts, responses)
            if len(values) != len(responses):
                raise RewardError(f"reward '{self.name}' returned {len(values)} scores for {len(responses)} responses")
            return torch.tensor([float(v) for v in values], dtype=torch.float32)
        from rlhf.rewards.implicit import ImplicitReward

        if isinstance(self.model, ImplicitReward):
            return self._score_implicit(batch, prompts, responses)
        device = next(self.model.parameters()).device
        if self.shares_tokenizer:
            # Same vocabulary and template: score the sampled ids directly (no decode and re-tokenise).
            input_ids, attention_mask, position_ids = batch.sequence()
            # Positions after EOS hold the pad id, so the classifier pools the last real token.
            out = self.model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                position_ids=position_ids.to(device),
            )
            return out.logits[:, 0].float().cpu()
        from rlhf.rewards.scoring import render, reward_scores

        messages = [[{"role": "user", "content": p}] for p in prompts]
        texts = [render(self.tokenizer, m, r) for m, r in zip(messages, responses, strict=True)]
        return reward_scores(self.model, self.tokenizer, texts, batch_size=len(texts))

    def _score_implicit(self, batch: Batch, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """An implicit reward model's scores: on the sampled ids when the tokenizers agree, else re-tokenised."""
        from rlhf.rewards.implicit import implicit_text_scores
        from rlhf.rewards.scoring import render, render_prompt

        if self.shares_tokenizer:
            input_ids, attention_mask, position_ids = batch.sequence()
            response_mask = torch.cat([torch.zeros_like(batch.query_mask), batch.response_mask.long()], dim=1)
            return self.model.score_tokens(input_ids, attention_mask, response_mask, position_ids)
        messages = [[{"role": "user", "content": p}] for p in prompts]
        rendered = [render_prompt(self.tokenizer, m) for m in messages]
        texts = [render(self.tokenizer, m, r) for m, r in zip(messages, responses, strict=True)]
        return implicit_text_scores(self.model, self.tokenizer, rendered, texts, batch_size=len(texts))


def build_reward_terms(
    sources: list[RewardSourceConfig], policy_tokenizer, dtype: str, trust_remote_code: bool, shared_reference=None
) -> list[RewardTerm]:
    """Loads every reward source of a recipe (learned models in inference mode).

    Args:
        shared_reference: (directory, model): ppo's reference policy and where it was loaded from; an implicit
            reward model whose reference is the same directory uses it instead of a copy of its own.
    """
    from transformers import AutoTokenizer

    from rlhf.models.loading import load_reward_model
    from rlhf.rewards.implicit import ImplicitReward

    terms = []
    for source in sources:
        if source.function is not None:
            terms.append(RewardTerm(source.name, source.weight, function=load_reward_function(source.function)))
            continue
        if source.spec is not None:
            from rlhf.voice.scorer import load_scorer

            terms.append(RewardTerm(source.name, source.weight, function=load_scorer(source.spec).score))
            continue
        model = load_reward_model(source.model, dtype, trust_remote_code, shared_reference)
        tokenizer = AutoTokenizer.from_pretrained(source.model, trust_remote_code=trust_remote_code)
        # An implicit reward reads the response tokens by mask, not the last token's logit: the pad id does not matter.
        pooled = isinstance(model, ImplicitReward) or model.config.pad_token_id == tokenizer.pad_token_id
        shares = same_tokenizer(tokenizer, policy_tokenizer) and pooled
        terms.append(RewardTerm(source.name, source.weight, model=model, tokenizer=tokenizer, shares_tokenizer=shares))
    return terms


def same_tokenizer(a, b) -> bool:
    """Whether two tokenizers give the same ids for the same conversation (vocabulary, chat template, pad id)."""
    return a.get_vocab() == b.get_vocab() and a.chat_template == b.chat_template and a.pad_token_id == b.pad_token_id


class RunningMoments:
    """Running mean and variance of scores (Chan et al. parallel update), for reward normalisation."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 0

    def update(self, values: torch.Tensor) -> None:
        """Merges a batch of values (already gathered across processes) into the running statistics."""
        n = values.numel()
        if n == 0:
            return
        batch_mean, batch_var = values.mean().item(), values.var(unbiased=False).item()
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    @property
    def std(self) -> float:
        """Running standard deviation (1 before any update)."""
        return max(self.var, 1e-8) ** 0.5 if self.count > 1 else 1.0

    def state_dict(self) -> dict[str, float]:
        """The statistics, for checkpoints."""
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restores the statistics from a checkpoint."""
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), int(state["count"])


def last_user_message(messages: list[dict[str, str]]) -> str:
    """The text a programmatic reward sees as the prompt: the last user turn."""
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")
