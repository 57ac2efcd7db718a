"""Bad data and bad recipes: every row of docs/bad_input.md that `rlhf validate` (and so `rlhf run`) catches.

Errors exit 2 with a message naming file, row and field; warnings print with counts and the run goes on.
"""

from __future__ import annotations

import json

import pytest
import yaml

from rlhf.data.doctor import examine, scan_file
from rlhf.data.lengths import histogram
from rlhf.recipe import load_recipe
from rlhf.stages.registry import PipelineRecipe

from .conftest import GOOD_PREFS, GOOD_SFT, chat, pair, write_jsonl


def refused(cli, recipe, *overrides) -> str:
    code, out, err = cli("validate", recipe, *overrides)
    assert code == 2, out + err
    assert "ok:" not in out
    return err


def test_malformed_jsonl_line(recipe_file, cli):
    err = refused(cli, recipe_file("sft", train=[GOOD_SFT[0], '{"messages": [', GOOD_SFT[1]]))
    # Ours: file, row, what and the column; json's own wording between them is not ours to pin.
    assert "train.jsonl, row 2: not valid JSON (" in err and " at column 15)" in err


def test_missing_field(recipe_file, cli):
    err = refused(cli, recipe_file("reward", train=[*GOOD_PREFS[:2], {"prompt": "p", "chosen": "c"}]))
    assert "train.jsonl, row 3, field 'rejected': missing field (preference rows need 'chosen' and 'rejected')" in err


def test_empty_response(recipe_file, cli):
    err = refused(cli, recipe_file("sft", train=[GOOD_SFT[0], chat("hello", "   ")]))
    assert "train.jsonl, row 2, field 'messages[1].content': empty content" in err


def test_chosen_equals_rejected(recipe_file, cli):
    err = refused(cli, recipe_file("reward", train=[GOOD_PREFS[0], pair("p", "same answer", "same answer")]))
    assert "train.jsonl, row 2, field 'rejected': chosen and rejected are identical" in err


def test_wrong_role_order(recipe_file, cli):
    row = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
        ]
    }
    err = refused(cli, recipe_file("sft", train=[row]))
    assert "row 1, field 'messages[1].role': two 'user' messages in a row: roles must alternate" in err


def test_conversation_not_ending_with_assistant(recipe_file, cli):
    row = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]
    }
    err = refused(cli, recipe_file("sft", train=[row]))
    assert "row 1, field 'messages': the conversation must end with an assistant message" in err


def test_unrecognised_format(recipe_file, cli):
    err = refused(cli, recipe_file("sft", train=[{"text": "just text"}]))
    assert "row 1: no sft fields: expected 'messages' or 'prompt' + 'completion' (found text)" in err


def test_rows_mixing_formats(recipe_file, cli):
    err = refused(cli, recipe_file("sft", train=[GOOD_SFT[0], {"prompt": "p", "completion": "c"}]))
    assert "rows mix formats" in err and "use one format per file" in err


def test_every_bad_row_is_listed_not_only_the_first(recipe_file, cli):
    rows = [GOOD_SFT[0], chat("a", " "), chat("b", ""), {"text": "x"}]
    err = refused(cli, recipe_file("sft", train=rows))
    assert all(f"row {n}" in err for n in (2, 3, 4))


def test_missing_data_file(recipe_file, cli, tmp_path):
    err = refused(cli, recipe_file("sft"), f"data.eval={tmp_path / 'nope.jsonl'}")
    assert f"{tmp_path / 'nope.jsonl'}: file not found" in err


def test_empty_data_file(recipe_file, cli):
    err = refused(cli, recipe_file("sft", train=[]))
    assert "train.jsonl: no rows" in err


def test_missing_recipe_file(cli, tmp_path):
    code, _, err = cli("validate", tmp_path / "nope.yaml")
    assert code == 2 and f"recipe file not found: {tmp_path / 'nope.yaml'}" in err


def test_unknown_recipe_key(recipe_file, cli):
    err = refused(cli, recipe_file("sft"), "training.learnin_rate=0.1")
    assert "unknown key 'training.learnin_rate' (did you mean 'training.learning_rate'?)" in err


def test_wrong_type(recipe_file, cli):
    err = refused(cli, recipe_file("sft"), "training.batch_size=eight")
    assert "error: " in err and "training.batch_size: " in err and "(got 'eight')" in err  # pydantic words the middle


def test_reward_source_pointing_at_the_sft_stage(tmp_path, cli):
    write_jsonl(tmp_path / "sft.jsonl", GOOD_SFT)
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "q"}])
    recipe = tmp_path / "pipeline.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(tmp_path / "run"),
                "sft": {"data": {"train": "sft.jsonl"}},
                "ppo": {
                    "model": {"name_or_path": "stage:sft"},
                    "data": {"train": "prompts.jsonl", "max_length": 64, "max_prompt_length": 32},
                    "rewards": [{"name": "learned", "model": "stage:sft"}],
                },
            }
        )
    )
    err = refused(cli, recipe)
    assert (
        "ppo.rewards.0.model refers to 'stage:sft', but a reward source must be a reward model: use 'stage:reward'"
    ) in err


# ---- Warnings: the run goes on, the counts are printed (and logged at the start of `rlhf run`).


def test_duplicate_rows_warn_with_count(recipe_file, cli):
    code, out, _ = cli("validate", recipe_file("sft", train=[*GOOD_SFT, GOOD_SFT[1], GOOD_SFT[1]]))
    assert code == 0
    assert "2 duplicate rows (row 7 repeats row 2, row 8 repeats row 2)" in out


def test_prompts_shared_by_train_and_eval_warn_with_examples(recipe_file, cli):
    held_out = [chat("  QUESTION 3 about   boots ", "other answer"), chat("new question", "x")]
    code, out, _ = cli("validate", recipe_file("sft", eval_rows=held_out))
    assert code == 0
    assert "1 prompts of sft train (train.jsonl) also appear in sft eval (eval.jsonl)" in out
    assert "train.jsonl row 4 = eval.jsonl row 1: 'question 3 about boots'" in out


def test_ppo_prompts_shared_with_held_out_prompts_of_another_stage(tmp_path):
    write_jsonl(tmp_path / "sft.jsonl", GOOD_SFT)
    write_jsonl(tmp_path / "sft_eval.jsonl", [chat("prompt 2 about tents", "an answer")])
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"prompt {i} about tents"} for i in range(4)])
    recipe = PipelineRecipe.model_validate(
        {
            "run_dir": str(tmp_path / "run"),
            "sft": {"data": {"train": str(tmp_path / "sft.jsonl"), "eval": str(tmp_path / "sft_eval.jsonl")}},
            "ppo": {
                "model": {"name_or_path": "stage:sft"},
                "data": {"train": str(tmp_path / "prompts.jsonl")},
                "rewards": [{"name": "rules", "function": "brand_voice"}],
            },
        }
    )
    report = examine(recipe, tokenizers=False)
    assert report.errors == []
    assert any(
        w.startswith("1 prompts of ppo train (prompts.jsonl) also appear in sft eval (sft_eval.jsonl)")
        for w in report.warnings
    )


def test_over_long_rows_are_counted(recipe_file, cli):
    long = "word " * 80
    code, out, _ = cli("validate", recipe_file("sft", train=[*GOOD_SFT, chat("q", long), chat(long, "a")]))
    assert code == 0
    assert "1 of 8 rows are longer than data.max_length=64 tokens and will be truncated" in out
    assert "1 of 8 rows will be dropped: the prompt alone fills data.max_length=64 tokens (rows 8)" in out
    assert "token lengths (" in out and "> 64" in out


def test_over_long_pairs_are_counted_as_dropped(tmp_path):
    long = "word " * 80
    write_jsonl(tmp_path / "prefs.jsonl", [*GOOD_PREFS, pair("q", long, "short")])
    recipe = load_recipe_from(
        tmp_path,
        {
            "stage": "reward",
            "output_dir": "out",
            "data": {"train": "prefs.jsonl", "max_length": 64, "max_prompt_length": 32},
        },
    )
    report = examine(recipe, tokenizers=False)
    assert any(
        "about 1 of 7 rows will be dropped: chosen or rejected is longer than data.max_length=64" in w
        for w in report.warnings
    )
    assert any("token lengths are estimates" in n for s in report.stages for n in s.notes)


def test_over_long_prompts_are_counted_as_left_truncated(tmp_path):
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "short"}, {"prompt": "word " * 60}])
    recipe = load_recipe_from(
        tmp_path,
        {
            "stage": "ppo",
            "output_dir": "out",
            "rewards": [{"name": "rules", "function": "brand_voice"}],
            "data": {"train": "prompts.jsonl", "max_prompt_length": 32},
        },
    )
    report = examine(recipe, tokenizers=False)
    assert any(
        "1 of 2 rows are longer than data.max_prompt_length=32 tokens and will be left-truncated" in w
        for w in report.warnings
    )


def test_histogram_bins_up_to_the_limit_and_beyond():
    lines = histogram([1, 10, 20, 30, 40, 90], limit=40, bins=4, width=4)
    assert [line.split("|")[1].split()[-1] for line in lines[:5]] == ["2", "1", "1", "1", "1"]
    assert lines[-1].strip() == "min 1, median 30, max 90"


def test_scan_respects_max_train_rows(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [*GOOD_SFT[:2], {"bad": 1}])
    assert scan_file(str(path), "demonstrations", "train", limit=2).errors == []
    assert len(scan_file(str(path), "demonstrations", "train").errors) == 1


def load_recipe_from(tmp_path, data):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_recipe(path)


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system [echo hi]", "!!python/name:os.system"])
def test_yaml_is_loaded_safely(tmp_path, cli, tag):
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"stage: sft\noutput_dir: {tag}\ndata: {{train: t.jsonl}}\n")
    code, _, err = cli("validate", recipe)
    assert code == 2 and "is not valid YAML: could not determine a constructor for the tag" in err


def test_good_data_gives_no_warning(recipe_file, cli):
    code, out, _ = cli("validate", recipe_file("reward"))
    assert code == 0 and "warning" not in out


def tokenizer_dir(path, template: str, **special) -> str:
    """A tiny tokenizer written without transformers: tokenizer.json plus tokenizer_config.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    path.mkdir()
    raw = Tokenizer(models.WordLevel({"<unk>": 0, "<eos>": 1}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template, **special}))
    return str(path)


def test_chat_template_refusing_a_conversation(recipe_file, cli, tmp_path):
    template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not "
        "supported') }}{% endif %}{{ m['content'] }}{% endfor %}"
    )
    model = tokenizer_dir(tmp_path / "tok", template, eos_token="<eos>", pad_token="<eos>")
    system = {"messages": [{"role": "system", "content": "be nice"}, *GOOD_SFT[0]["messages"]]}
    err = refused(cli, recipe_file("sft", train=[GOOD_SFT[0], system]), f"model.name_or_path={model}")
    assert (
        f"train.jsonl, row 2: the chat template (tokenizer of {model}) refuses this conversation: System role "
        "not supported"
    ) in err


def test_tokenizer_without_pad_token_warns_before_the_run(recipe_file, cli, tmp_path):
    model = tokenizer_dir(tmp_path / "tok", "{% for m in messages %}{{ m['content'] }}{% endfor %}", eos_token="<eos>")
    code, out, _ = cli("validate", recipe_file("sft"), f"model.name_or_path={model}")
    assert code == 0
    assert f"the tokenizer of {model} has no pad token: its EOS token '<eos>' will be used for padding" in out
    err = refused(cli, recipe_file("sft"), f"model.name_or_path={tokenizer_dir(tmp_path / 'bare', '{{ 1 }}')}")
    assert "has neither a pad nor an EOS token; add a pad token" in err
