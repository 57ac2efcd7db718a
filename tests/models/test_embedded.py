"""embedded:tiny: built locally and deterministically, with a chat template that marks the assistant's tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf.config import ModelConfig
from rlhf.models import embedded
from rlhf.models.embedded import BOS, EOS, PAD, ROLE_TOKENS, build_key, cache_root, corpus_texts, resolve_embedded
from rlhf.models.loading import ModelLoadError, load_causal_lm, load_reward_model, load_tokenizer, resolve_model_path

CONVERSATION = [
    {"role": "system", "content": "You write for Ridgeline Outfitters."},
    {"role": "user", "content": "Where is my tent?"},
    {"role": "assistant", "content": "I'm sorry it is late. I've sent it by express post today."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "Happy trails, the Ridgeline team"},
]


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory) -> tuple[Path, Path]:
    """embedded:tiny built from scratch into two fresh cache directories."""
    first = resolve_embedded("embedded:tiny", cache=tmp_path_factory.mktemp("cache_a"))
    second = resolve_embedded("embedded:tiny", cache=tmp_path_factory.mktemp("cache_b"))
    return first, second


@pytest.fixture(scope="module")
def model_dir(two_builds) -> Path:
    return two_builds[0]


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def test_two_builds_give_identical_files_and_weights(two_builds):
    from safetensors.torch import load_file

    first, second = two_builds
    assert first != second and first.name == second.name  # the same build key in both caches
    files = sorted(p.name for p in first.iterdir())
    assert files == sorted(p.name for p in second.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    for name in files:
        if name != "model.safetensors":
            assert (first / name).read_bytes() == (second / name).read_bytes(), name
    weights_a, weights_b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert weights_a[key].equal(weights_b[key]), key


def test_a_cached_build_is_reused(two_builds):
    first = two_builds[0]
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert resolve_embedded("embedded:tiny", cache=first.parent) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no staging directory left behind


def test_cache_location_follows_rlhf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CACHE", str(tmp_path))
    assert cache_root() == tmp_path / "embedded"


def test_build_key_follows_the_corpus_and_the_spec():
    texts = corpus_texts()
    assert texts, "the brand-voice corpus is empty"
    assert build_key("tiny", texts) == build_key("tiny", list(texts))
    assert build_key("tiny", texts) != build_key("tiny", [*texts, "one more reply"])
    assert build_key("tiny", texts) != build_key("small", texts)


def test_unknown_embedded_model_is_refused():
    with pytest.raises(ValueError, match="embedded:tiny"):
        resolve_embedded("embedded:huge")


def test_tokenizer_has_pad_bos_eos_and_role_tokens(tokenizer):
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) == (PAD, BOS, EOS)
    ids = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}
    assert len(ids) == 3 and None not in ids
    for token in ROLE_TOKENS:
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1, token
    assert len(tokenizer) <= embedded.VOCAB_SIZE + len(embedded.SPECIAL_TOKENS)


def test_tokenizer_round_trips_text(tokenizer):
    text = "Hi Maya,\nI'm sorry order #48213 is late. I've upgraded it to express (no cost)!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_chat_template_marks_the_assistant_turns_and_their_end_token(tokenizer):
    encoded = tokenizer.apply_chat_template(
        CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    assert len(ids) == len(mask) and ids[0] == tokenizer.bos_token_id
    # Split the trained tokens into runs: one per assistant turn, each its reply followed by <|end|>.
    runs, current = [], []
    for token, trained in zip(ids, mask, strict=True):
        if trained:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    replies = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]
    assert [tokenizer.decode(run) for run in runs] == [reply + EOS for reply in replies]
    untrained = tokenizer.decode([t for t, trained in zip(ids, mask, strict=True) if not trained])
    for message in CONVERSATION:
        if message["role"] != "assistant":
            assert message["content"] in untrained  # prompts are never trained on
    assert mask[-1] == 1 and ids[-1] == tokenizer.eos_token_id


def test_generation_prompt_ends_with_the_assistant_token(tokenizer):
    text = tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert text.startswith(BOS)
    assert text.endswith("<|assistant|>")
    assert tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False).endswith(EOS)


def test_chat_template_refuses_unknown_roles(tokenizer):
    with pytest.raises(Exception, match="unknown role"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_model_loads_and_generates(model_dir, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    prompt = tokenizer.apply_chat_template(
        CONVERSATION[:2], add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[0] == 1
    assert prompt["input_ids"].shape[1] < out.shape[1] <= prompt["input_ids"].shape[1] + 8


def test_recipe_loaders_accept_embedded_references():
    cfg = ModelConfig(name_or_path="embedded:tiny")
    path = resolve_model_path(cfg.name_or_path)
    assert (Path(path) / "config.json").is_file()
    tokenizer = load_tokenizer(cfg, path, padding_side="left")
    assert tokenizer.padding_side == "left" and tokenizer.chat_template
    model = load_causal_lm(cfg, path)
    assert model.config.model_type == "llama"


def test_model_references_that_cannot_be_loaded_directly():
    with pytest.raises(ModelLoadError, match="pipeline stage"):
        resolve_model_path("stage:sft")
    assert resolve_model_path("org/some-model") == "org/some-model"  # hub ids pass through


def test_a_causal_lm_is_not_a_reward_model(model_dir):
    with pytest.raises(ModelLoadError, match="not a reward model"):
        load_reward_model(str(model_dir))
