"""Loading models and tokenizers from a recipe's model reference (hub id, local directory or embedded:NAME)."""

from __future__ import annotations

import logging
from pathlib import Path

from rlhf.config import EMBEDDED_PREFIX, STAGE_REF_PREFIX, LoraConfig, ModelConfig

logger = logging.getLogger("rlhf")


class ModelLoadError(ValueError):
    """A model reference that cannot be used for what the stage needs."""


def resolve_model_path(name_or_path: str) -> str:
    """Turns a model reference into something `from_pretrained` accepts (builds embedded models on first use)."""
    if name_or_path.startswith(EMBEDDED_PREFIX):
        from rlhf.models.embedded import resolve_embedded

        return str(resolve_embedded(name_or_path))
    if name_or_path.startswith(STAGE_REF_PREFIX):
        raise ModelLoadError(
            f"'{name_or_path}' refers to a pipeline stage; run it from a pipeline recipe, or give the stage's "
            "final/ directory as a path"
        )
    return name_or_path


def torch_dtype(cfg: ModelConfig):
    """The torch dtype a recipe asks for."""
    import torch

    return getattr(torch, cfg.dtype)


def load_tokenizer(cfg: ModelConfig, path: str | None = None, padding_side: str = "right"):
    """Loads the tokenizer; a tokenizer without a pad token gets its EOS token as pad (logged)."""
    from transformers import AutoTokenizer

    path = path or resolve_model_path(cfg.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(
        path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, padding_side=padding_side
    )
    if cfg.chat_template is not None:
        tokenizer.chat_template = cfg.chat_template
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"the tokenizer of {path} has neither a pad nor an EOS token; add a pad token")
        logger.warning("tokenizer of %s has no pad token; using its EOS token %r", path, tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ModelLoadError(f"the tokenizer of {path} has no chat template; conversational data needs one")
    return tokenizer


def load_causal_lm(cfg: ModelConfig, path: str | None = None):
    """Loads a causal LM (or a causal LM with a PEFT adapter) for training or inference."""
    from transformers import AutoModelForCausalLM

    path = path or resolve_model_path(cfg.name_or_path)
    if (Path(path) / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        # An adapter from an earlier stage is merged, so later stages start from plain weights.
        model = AutoPeftModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype(cfg), is_trainable=False, trust_remote_code=cfg.trust_remote_code
        )
        return model.merge_and_unload()
    return AutoModelForCausalLM.from_pretrained(
        path, revision=cfg.revision, dtype=torch_dtype(cfg), trust_remote_code=cfg.trust_remote_code
    )


def load_reward_model(path: str, dtype: str = "float32", trust_remote_code: bool = False, shared_reference=None):
    """Loads a reward model in inference mode: a sequence classifier with one output, or an implicit reward model
    (a causal LM and its reference, `rlhf.rewards.implicit`) where the directory has the marker file.

    Args:
        shared_reference: (directory, model) the caller holds: an implicit reward model whose reference is that
            directory uses the model instead of loading it again (`load_implicit_reward`).

    Raises:
        ModelLoadError: The directory is neither an implicit reward model nor a sequence classifier with one label.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from rlhf.rewards.implicit import MARKER, is_implicit, load_implicit_reward

    path = resolve_model_path(path)
    if is_implicit(path):
        try:
            return load_implicit_reward(path, dtype, trust_remote_code, shared_reference)
        except ValueError as err:
            raise ModelLoadError(str(err)) from None
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    architectures = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures) or config.num_labels != 1:
        raise ModelLoadError(
            f"{path} is not a reward model: expected a *ForSequenceClassification architecture with one label, "
            f"found {architectures or 'no architecture'} with {config.num_labels} labels (a causal LM scores as an "
            f"implicit reward with {MARKER} beside it)"
        )
    model = AutoModelForSequenceClassification.from_pretrained(
        path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
    )
    model.eval().requires_grad_(False)
    return model


def peft_config(lora: LoraConfig, task_type: str):
    """A peft LoraConfig from the recipe's lora block ('CAUSAL_LM' or 'SEQ_CLS')."""
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=task_type,
    )
