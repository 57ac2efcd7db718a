"""A voice spec named from a recipe (`spec: voice.yaml` in a ppo reward or a compare judge), no Python module needed:
resolved against the recipe's directory, checked by `rlhf validate`, scored as a reward term with a per-rule
breakdown and a statement of what it shares with training."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlhf.cli import main
from rlhf.config import RewardSourceConfig
from rlhf.recipe import RecipeError, load_recipe
from rlhf.rewards.sources import build_reward_terms, reward_module
from rlhf.voice.scorer import load_scorer

BANK = Path(__file__).resolve().parents[2] / "recipes" / "bank_voice"
PROMPT = "I lost my debit card this morning, please block it. Regards, Anna Patel"
REPLY = (
    "Dear Anna Patel,\nThank you for letting us know. We have blocked the card and a replacement will arrive within "
    "five working days. Please call us if anything looks unfamiliar.\nKind regards, Harbourstone Bank"
)


def _copy_bank(tmp_path: Path, edit) -> Path:
    """The bank pipeline beside a copy of its spec (edited by `edit`), data paths pointing at the shipped files."""
    recipe = yaml.safe_load((BANK / "pipeline.yaml").read_text(encoding="utf-8"))
    for stage in ("sft", "reward", "ppo"):
        for split in ("train", "eval"):
            recipe[stage]["data"][split] = str(BANK / recipe[stage]["data"][split])
    recipe["compare"]["prompts"]["path"] = str(BANK / recipe["compare"]["prompts"]["path"])
    spec = yaml.safe_load((BANK / "voice.yaml").read_text(encoding="utf-8"))
    edit(recipe, spec)
    (tmp_path / "voice.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def test_spec_path_is_resolved_against_the_recipe():
    recipe = load_recipe(BANK / "pipeline.yaml")
    assert recipe.ppo.rewards[1].spec == str((BANK / "voice.yaml").resolve())
    assert recipe.compare.judges[0].spec == str((BANK / "voice.yaml").resolve())


def test_a_reward_source_takes_exactly_one_of_model_function_spec(tmp_path):
    def both(recipe, spec):
        recipe["ppo"]["rewards"][1]["function"] = "brand_voice"

    with pytest.raises(RecipeError, match="needs exactly one of `model`, `function` or `spec`"):
        load_recipe(_copy_bank(tmp_path, both))


def test_a_trained_on_spec_cannot_be_a_judge(tmp_path):
    def proxy(recipe, spec):
        recipe["compare"]["proxy"].append({"name": "rules", "spec": "voice.yaml", "weight": 1.0})

    with pytest.raises(RecipeError, match="judge 'bank_voice' is also a proxy"):
        load_recipe(_copy_bank(tmp_path, proxy))


def test_validate_names_the_reward_and_the_spec_key(tmp_path, capsys):
    def typo(recipe, spec):
        spec["length"]["max_word"] = spec["length"].pop("max_words")

    assert main(["validate", str(_copy_bank(tmp_path, typo))]) == 2
    err = capsys.readouterr().err
    assert "rewards.1.spec:" in err and "unknown key 'length.max_word' (did you mean 'length.max_words'?)" in err


def test_spec_term_scores_like_the_compiled_spec_and_explains_per_rule():
    source = RewardSourceConfig(name="bank_voice", spec=str(BANK / "voice.yaml"))
    (term,) = build_reward_terms([source], None, "float32", False)
    casual = REPLY.replace("Thank you for letting us know.", "No worries!")
    prompts = [PROMPT, PROMPT]
    scores = term.score(None, prompts, [REPLY, casual], None)
    assert scores.tolist() == pytest.approx(load_scorer(BANK / "voice.yaml").score(prompts, [REPLY, casual]))
    assert scores[0] == 1.0 and scores[1] < 1.0
    owner = reward_module(term.function)
    assert owner.explain([PROMPT], [casual])[0]["no_exclamation"] == 0.5
    assert "labelled the preference pairs" in owner.SHARES_WITH_TRAINING
