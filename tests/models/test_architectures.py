"""The architecture matrix: the shipped pipeline (sft -> reward -> ppo -> compare, shortened) on tiny models of the
common decoder-only families, built here from a config and the embedded tokenizer (no hub).

Each family's model is saved with `save_pretrained` (weights, config and the embedded tokenizer with its chat template)
and the pipeline starts from that directory. Every stage's output must load, and ppo must have sampled through the
decoder expected for the family: the lean KV-cache decoder for the families it covers, the model's own forward for
GPT-2 and GPT-NeoX. Qwen2 runs ppo with a LoRA adapter. The reward model is the shipped implicit one (a causal LM of
the family), except on GPT-2 and Mistral, which train the one-logit classifier. The runs are a few optimiser steps on a few rows: they check
that the code paths work per architecture, not that training helps (tests/stages does that on the default model).

The benchmark's Qwen2 workload (`scripts/bench.py ppo --arch qwen2`) is checked here too: the same function as the
Llama one, on the lean decoder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rlhf.generation import decoding
from rlhf.pipeline import run_recipe
from rlhf.recipe import load_recipe

PIPELINE = Path(__file__).resolve().parents[2] / "recipes" / "brand_voice" / "pipeline.yaml"

LLAMA_LAYOUT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)
# id -> (causal LM class, config settings, lean decoder expected). Windows shorter than the prompts, so they bite.
ARCHITECTURES = {
    "gpt2": ("GPT2LMHeadModel", dict(n_embd=32, n_layer=2, n_head=4, n_positions=256), False),
    "gpt_neox": (
        "GPTNeoXForCausalLM",
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
        False,
    ),
    "qwen2": ("Qwen2ForCausalLM", LLAMA_LAYOUT, True),
    "qwen3": ("Qwen3ForCausalLM", dict(LLAMA_LAYOUT, head_dim=8), True),
    "mistral": ("MistralForCausalLM", dict(LLAMA_LAYOUT, sliding_window=16), True),
    "gemma2": ("Gemma2ForCausalLM", dict(LLAMA_LAYOUT, head_dim=8, sliding_window=16), True),
    "phi3": ("Phi3ForCausalLM", LLAMA_LAYOUT, True),
}
LORA = {"qwen2": ["ppo.model.lora.r=4", "ppo.model.lora.alpha=8"]}
# The shipped reward model is implicit (a causal LM scored against the sft model); these train the one-logit
# classifier instead, so both kinds of reward model run on a GPT-2-style and a Llama-style family.
CLASSIFIER = {"gpt2", "mistral"}

SHORT = [
    "tracking.report_to=[none]",
    "sft.data.max_train_rows=16",
    "sft.data.max_eval_rows=4",
    "sft.training.max_steps=2",
    "sft.training.batch_size=8",
    "sft.training.logging_steps=1",
    "sft.training.eval_steps=1000",
    "sft.training.save_steps=null",
    "reward.data.max_train_rows=16",
    "reward.data.max_eval_rows=4",
    "reward.training.max_steps=2",
    "reward.training.batch_size=8",
    "reward.training.logging_steps=1",
    "reward.training.eval_steps=1000",
    "reward.training.save_steps=null",
    "ppo.data.max_train_rows=4",
    "ppo.data.max_eval_rows=2",
    "ppo.data.max_length=128",
    "ppo.data.max_prompt_length=64",
    "ppo.training.max_steps=1",
    "ppo.training.batch_size=4",
    "ppo.update.epochs=1",
    "ppo.update.num_minibatches=1",
    "ppo.rollout.max_new_tokens=8",
    "compare.prompts.max_prompts=2",
    "compare.prompts.max_prompt_length=64",
    "compare.rollout.max_new_tokens=8",
    "compare.batch_size=4",
    "compare.bootstrap_resamples=100",
    "compare.report_samples=1",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The embedded tokenizer (chat template included), saved on its own."""
    from transformers import AutoTokenizer

    from rlhf.models.embedded import resolve_embedded

    out = tmp_path_factory.mktemp("tokenizer")
    AutoTokenizer.from_pretrained(resolve_embedded("embedded:tiny")).save_pretrained(out)
    return out


def build(arch: str, tokenizer_dir: Path, out: Path) -> Path:
    """A randomly initialised tiny `arch` model with the embedded tokenizer, saved as a model directory."""
    import torch
    import transformers

    class_name, settings, _ = ARCHITECTURES[arch]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    cls = getattr(transformers, class_name)
    config = cls.config_class(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **ids, **settings)
    torch.manual_seed(0)
    model = cls(config)
    model.generation_config.update(pad_token_id=tokenizer.pad_token_id, **ids)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_pipeline_runs_on_each_architecture(arch, tokenizer_dir, tmp_path, monkeypatch, caplog):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.config import ModelConfig
    from rlhf.models.loading import load_causal_lm, load_reward_model
    from rlhf.rewards.implicit import ImplicitReward

    class_name, _, lean = ARCHITECTURES[arch]
    base = build(arch, tokenizer_dir, tmp_path / arch)
    run_dir = tmp_path / "run"
    models = f"[{{name: base, path: '{base}'}}, {{name: sft, path: 'stage:sft'}}, {{name: ppo, path: 'stage:ppo'}}]"
    monkeypatch.setattr(decoding, "_announced", set())  # the choice is logged once per process: start afresh
    caplog.set_level(logging.INFO, logger="rlhf")
    overrides = [f"run_dir={run_dir}", f"sft.model.name_or_path={base}", f"compare.models={models}", *SHORT]
    classifier = ["reward.implicit=null"] if arch in CLASSIFIER else []
    run_recipe(load_recipe(PIPELINE, overrides + LORA.get(arch, []) + classifier))

    for stage in ("sft", "ppo"):
        final = run_dir / stage / "final"
        assert type(load_causal_lm(ModelConfig(name_or_path=str(final)))).__name__ == class_name, stage
        assert AutoTokenizer.from_pretrained(final).chat_template
    assert (run_dir / "ppo" / "final" / "adapter_config.json").is_file() == (arch in LORA)
    model_type = AutoConfig.from_pretrained(base).model_type
    if arch in CLASSIFIER:
        reward = AutoModelForSequenceClassification.from_pretrained(run_dir / "reward" / "final")
        assert reward.config.num_labels == 1 and reward.config.model_type == model_type
    else:
        reward = load_reward_model(str(run_dir / "reward" / "final"))
        assert isinstance(reward, ImplicitReward) and type(reward.policy).__name__ == class_name
        assert reward.config.model_type == model_type and reward.reference is not None
    results = json.loads((run_dir / "compare" / "results.json").read_text())
    assert list(results["summary"]) == ["base", "sft", "ppo"]
    assert (run_dir / "compare" / "report.html").is_file()

    # sft and reward never sample, so the first choice logged is ppo's rollout (compare's follows, same model class).
    chosen = [r.getMessage() for r in caplog.records if r.getMessage().startswith("decoding: ")]
    expected = f"decoding: lean KV-cache decoder for {class_name}" if lean else f"decoding: {class_name}'s own forward"
    assert chosen and all(message.startswith(expected) for message in chosen), chosen


def test_bench_qwen2_workload_is_the_llama_one_on_the_lean_decoder(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from rlhf.bench.models import prepare
    from rlhf.generation.decoding import LeanDecoder, make_decoder

    llama, qwen2 = prepare("tiny", tmp_path / "llama"), prepare("tiny", tmp_path / "qwen2", arch="qwen2")
    policy = AutoModelForCausalLM.from_pretrained(qwen2["policy"]).eval()
    reference = AutoModelForCausalLM.from_pretrained(llama["policy"]).eval()
    assert type(policy).__name__ == "Qwen2ForCausalLM"
    assert policy.config.hidden_size == reference.config.hidden_size
    assert policy.config.num_hidden_layers == reference.config.num_hidden_layers
    assert AutoModelForSequenceClassification.from_pretrained(qwen2["reward"]).config.model_type == "qwen2"
    ids = torch.arange(3, 40)[None]
    with torch.no_grad():
        torch.testing.assert_close(policy(ids).logits, reference(ids).logits)
    assert isinstance(make_decoder(policy, 1, 8), LeanDecoder)
    assert prepare("tiny", tmp_path / "qwen2", arch="qwen2") == qwen2  # built once, then reused
