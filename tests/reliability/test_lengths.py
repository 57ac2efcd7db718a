"""The doctor's tokenizer (tokenizer.json + chat template, no transformers) counts exactly what transformers counts."""

from __future__ import annotations

import json

import pytest

from rlhf.config import ModelConfig
from rlhf.data.doctor import reward_function_problem
from rlhf.data.lengths import TOKENIZER_FILES, LightTokenizer, token_counter

from ..conftest import DATA_DIR


@pytest.fixture(scope="module")
def tokenizers():
    from rlhf.models.embedded import resolve_embedded
    from rlhf.models.loading import load_tokenizer

    directory = resolve_embedded("embedded:tiny")
    light = LightTokenizer({n: directory / n for n in TOKENIZER_FILES if (directory / n).is_file()})
    return light, load_tokenizer(ModelConfig(name_or_path=str(directory)))


def rows(name: str, n: int = 25) -> list[dict]:
    return [json.loads(line) for line in (DATA_DIR / name).read_text().splitlines()[:n]]


def test_token_counts_match_transformers(tokenizers):
    light, full = tokenizers
    count = token_counter(light)
    conversations = [r["messages"] for r in rows("sft_train.jsonl")]
    conversations += [r["prompt"] + r["chosen"] for r in rows("prefs_train.jsonl")]
    for messages in conversations:
        text = full.apply_chat_template(messages, tokenize=False)
        assert light.render(messages) == text
        assert count(messages, False) == len(full(text, add_special_tokens=False)["input_ids"])
    for row in rows("ppo_prompts.jsonl"):
        text = full.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        assert count(row["prompt"], True) == len(full(text, add_special_tokens=False)["input_ids"])
    assert light.pad_token == full.pad_token and light.eos_token == full.eos_token


@pytest.mark.parametrize(
    "spec",
    [
        "brand_voice",
        "nope",
        "os",
        "os.path",
        "reward_models.brand_voice:nope",
        "reward_models.brand_voice:score",
        "json:dumps",
        "no_such_pkg.mod:f",
    ],
)
def test_preflight_reward_check_agrees_with_the_loader(spec):
    from rlhf.rewards.sources import RewardError, load_reward_function

    try:
        load_reward_function(spec)
        expected = None
    except RewardError as err:
        expected = str(err)
    assert reward_function_problem(spec) == expected
