"""The embedded models: built locally and deterministically, with a chat template that marks the assistant's tokens.

embedded:tiny (random weights) stands in for the build machinery; pretraining is tested on a deliberately tiny
pretrained spec registered for the test, and the shipped embedded:base (built once per cache, as the pipeline does).
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rlhf.config import ModelConfig
from rlhf.models import embedded
from rlhf.models.embedded import (
    BOS,
    CORPUS_FILES,
    EOS,
    PAD,
    ROLE_TOKENS,
    build_key,
    cache_root,
    corpus_dir,
    corpus_texts,
    resolve_embedded,
    row_documents,
)
from rlhf.models.loading import ModelLoadError, load_causal_lm, load_reward_model, load_tokenizer, resolve_model_path
from rlhf.models.pretrain import PretrainSettings, lm_loss

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


# --- the corpus ---------------------------------------------------------------------------------------------------


def test_corpus_rows_give_their_text_only():
    metadata = {"intent": "late_order", "customer_name": "Mia", "order_id": "#12345", "rule": "greets_name"}
    prompt = [{"role": "user", "content": "Where is order #12345? - Mia"}]
    assert row_documents({"prompt": prompt, "chosen": "Hi Mia,", "rejected": "Hello.", **metadata}) == [
        "Where is order #12345? - Mia\n\nHi Mia,",
        "Where is order #12345? - Mia\n\nHello.",
    ]
    chat = [*prompt, {"role": "assistant", "content": "Hi Mia,", "name": "agent"}]
    assert row_documents({"messages": chat, "on_voice": True, **metadata}) == [
        "Where is order #12345? - Mia\n\nHi Mia,"
    ]
    assert row_documents({"prompt": "Where is it?", "completion": "On its way.", **metadata}) == [
        "Where is it?\n\nOn its way."
    ]
    assert row_documents({"prompt": prompt, **metadata}) == ["Where is order #12345? - Mia"]
    # Implicit-prompt pairs: the whole conversations.
    assert row_documents({"chosen": chat, "rejected": prompt}) == [
        "Where is order #12345? - Mia\n\nHi Mia,",
        "Where is order #12345? - Mia",
    ]


def test_corpus_leaves_out_every_held_out_file(tmp_path):
    for name in CORPUS_FILES:
        (tmp_path / name).write_bytes((corpus_dir() / name).read_bytes())
    for held_out in ("sft_eval.jsonl", "prefs_eval.jsonl", "eval_prompts.jsonl", "prefs_hard.jsonl"):
        row = {"prompt": "HELD OUT PROMPT", "chosen": "HELD OUT REPLY", "rejected": "HELD OUT"}
        (tmp_path / held_out).write_text(json.dumps(row) + "\n")
    texts = corpus_texts(tmp_path)
    assert texts == corpus_texts() and not any("HELD OUT" in text for text in texts)
    shipped_held_out = [corpus_dir() / n for n in ("sft_eval.jsonl", "prefs_eval.jsonl", "eval_prompts.jsonl")]
    held_out_texts = {d for file in shipped_held_out for line in file.open() for d in row_documents(json.loads(line))}
    assert not held_out_texts & set(texts)


def test_corpus_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="sft_train.jsonl"):
        corpus_texts(tmp_path)


def test_digits_are_one_token_each(tokenizer):
    for text in ("order #48213", "#90210 and 7 days", "Order 31415926!"):
        tokens = tokenizer.tokenize(text)
        digits = [t for t in tokens if any(c.isdigit() for c in t)]
        assert digits and all(len(t) == 1 for t in digits), tokens
        assert "".join(digits) == "".join(c for c in text if c.isdigit())


# --- pretraining --------------------------------------------------------------------------------------------------

# Small enough to pretrain in seconds, large enough that the loss falls well below the random model's.
MICRO_DIMS = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2
)
MICRO_PRETRAIN = PretrainSettings(steps=30, batch_size=8, block_size=64, learning_rate=1e-2, warmup_steps=3)


@pytest.fixture(scope="module")
def micro_builds(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A deliberately tiny pretrained spec built into two fresh caches, and the same spec left at random weights."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(embedded.EMBEDDED_SPECS, "micro", MICRO_DIMS)
        patch.setitem(embedded.EMBEDDED_SPECS, "micro-random", MICRO_DIMS)
        patch.setitem(embedded.PRETRAINED, "micro", MICRO_PRETRAIN)
        first = resolve_embedded("embedded:micro", cache=tmp_path_factory.mktemp("micro_a"))
        second = resolve_embedded("embedded:micro", cache=tmp_path_factory.mktemp("micro_b"))
        random = resolve_embedded("embedded:micro-random", cache=tmp_path_factory.mktemp("micro_r"))
    return first, second, random


def held_out_documents() -> list[str]:
    """The held-out sft demonstrations as plain documents (the pretraining never sees them)."""
    rows = (corpus_dir() / "sft_eval.jsonl").read_text(encoding="utf-8").splitlines()
    return [d for line in rows[:40] for d in row_documents(json.loads(line))]


def held_out_loss(directory: Path) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(directory)
    return lm_loss(model, AutoTokenizer.from_pretrained(directory), held_out_documents(), block_size=256)


def test_pretraining_is_deterministic(micro_builds):
    from safetensors.torch import load_file

    first, second, _ = micro_builds
    assert first.name == second.name
    files = sorted(p.name for p in first.iterdir())
    assert files == sorted(p.name for p in second.iterdir()) and "pretraining.json" in files
    for name in files:
        if name != "model.safetensors":
            assert (first / name).read_bytes() == (second / name).read_bytes(), name
    weights_a, weights_b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(weights_a[key].equal(weights_b[key]) for key in weights_a)


def test_pretraining_lowers_held_out_loss(micro_builds):
    first, _, random = micro_builds
    record = json.loads((first / "pretraining.json").read_text())
    assert len(record["losses"]) == MICRO_PRETRAIN.steps
    assert record["losses"][-1] < record["losses"][0] - 1.0
    pretrained, untrained = held_out_loss(first), held_out_loss(random)
    assert pretrained < untrained - 1.0, (pretrained, untrained)


def test_pretraining_settings_are_in_the_build_key(monkeypatch):
    texts = corpus_texts()
    monkeypatch.setitem(embedded.EMBEDDED_SPECS, "micro", MICRO_DIMS)
    monkeypatch.setitem(embedded.PRETRAINED, "micro", MICRO_PRETRAIN)
    key = build_key("micro", texts)
    monkeypatch.setitem(embedded.PRETRAINED, "micro", dataclasses.replace(MICRO_PRETRAIN, steps=31))
    assert build_key("micro", texts) != key
    monkeypatch.delitem(embedded.PRETRAINED, "micro")
    assert build_key("micro", texts) != key


def test_the_shipped_base_is_pretrained_and_loads():
    """embedded:base as the pipeline builds it (once per cache): a real base model, far better than random."""
    from transformers import AutoModelForCausalLM

    base = resolve_embedded("embedded:base")
    assert AutoModelForCausalLM.from_pretrained(base).config.model_type == "llama"
    assert (base / "pretraining.json").is_file()
    # Random weights sit near log(vocab) = 7.6 nats; the base predicts held-out replies far better.
    assert held_out_loss(base) < 3.0


def test_two_processes_asking_at_once_build_once(tmp_path, monkeypatch):
    """Ranks of a launch ask for the model together: one builds (under the lock), the other waits and reuses it."""
    monkeypatch.setitem(embedded.EMBEDDED_SPECS, "micro", MICRO_DIMS)
    monkeypatch.setitem(embedded.PRETRAINED, "micro", dataclasses.replace(MICRO_PRETRAIN, steps=5))
    builds = []
    build = embedded.build_embedded
    monkeypatch.setattr(embedded, "build_embedded", lambda *args: builds.append(args[0]) or build(*args))
    # flock locks belong to open files, so two threads with their own open() exclude each other like two processes.
    with ThreadPoolExecutor(2) as pool:
        found = list(pool.map(lambda _: resolve_embedded("embedded:micro", cache=tmp_path), range(2)))
    assert found[0] == found[1] and (found[0] / "model.safetensors").is_file()
    assert builds == ["micro"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [found[0].name, f"{found[0].name}.lock"]


BANK_DATA = Path(__file__).resolve().parents[2] / "recipes" / "bank_voice" / "data"


def test_an_embedded_model_builds_from_its_own_corpus(tmp_path, monkeypatch):
    from rlhf.data.lengths import _embedded_dir
    from rlhf.models.embedded import parse_reference

    own = tmp_path / "corpus"
    own.mkdir()
    (own / "sft_train.jsonl").write_bytes((BANK_DATA / "sft_train.jsonl").read_bytes())  # the one required file
    reference = f"embedded:tiny@{own}"
    assert parse_reference(reference) == ("tiny", own)
    cache = tmp_path / "cache"
    bank, shipped = resolve_embedded(reference, cache=cache), resolve_embedded("embedded:tiny", cache=cache)
    assert bank != shipped and bank.parent == shipped.parent  # cached apart, keyed by what went in
    # Its tokenizer learned the bank's words: the bank's name in fewer pieces than Ridgeline's tokenizer needs.
    name = "Harbourstone"
    pieces = {d: len(load_tokenizer(ModelConfig(name_or_path=str(d)), str(d)).tokenize(name)) for d in (bank, shipped)}
    assert pieces[bank] < pieces[shipped], pieces
    assert resolve_embedded(reference, cache=cache) == bank  # found again, not rebuilt
    # The length estimate of `rlhf validate` finds the built tokenizer under the same key.
    monkeypatch.setattr(embedded, "cache_root", lambda: cache)
    assert _embedded_dir(reference) == bank and _embedded_dir(f"embedded:tiny@{tmp_path / 'none'}") is None
    (own / "sft_train.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="lacks sft_train.jsonl"):
        resolve_embedded(reference, cache=cache)
    with pytest.raises(ValueError, match="each optionally @DIR"):
        resolve_embedded(f"embedded:huge@{own}", cache=cache)


def test_a_recipe_names_its_own_corpus_relative_to_itself(tmp_path):
    from rlhf.recipe import RecipeError, load_recipe

    (tmp_path / "data").mkdir()
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        f"stage: sft\noutput_dir: {tmp_path / 'out'}\ndata: {{train: {BANK_DATA / 'sft_train.jsonl'}}}\n"
        "model: {name_or_path: embedded:base@data}\n"
    )
    assert load_recipe(recipe).model.name_or_path == f"embedded:base@{(tmp_path / 'data').resolve()}"
    with pytest.raises(RecipeError, match=r"model.name_or_path: embedded:base@elsewhere: .* does not exist"):
        load_recipe(recipe, ["model.name_or_path=embedded:base@elsewhere"])
