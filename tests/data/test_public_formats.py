"""Public preference formats: HH-RLHF transcripts, UltraFeedback rows (scores as margins), OpenAI-style messages.

Each is converted into conversations so the chat template applies; `rlhf validate` names the format of each file;
a malformed transcript is refused with exit 2 and one `error:` line naming the file, row and field.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlhf.cli import main
from rlhf.data.doctor import scan_file
from rlhf.data.formats import DataError, classify, load_records


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict:
    return {"role": "system", "content": text}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# Anthropic/hh-rlhf rows: two whole transcripts that differ only in the last Assistant turn. Turns hold paragraphs.
HH_ROW = {
    "chosen": "\n\nHuman: My tent leaks at the seams.\n\nAssistant: Sorry to hear that. Is it the Ridge 2?"
    "\n\nHuman: Yes, bought in May.\n\nAssistant: Then it is under warranty.\n\nSend us a photo and we will "
    "replace it.",
    "rejected": "\n\nHuman: My tent leaks at the seams.\n\nAssistant: Sorry to hear that. Is it the Ridge 2?"
    "\n\nHuman: Yes, bought in May.\n\nAssistant: Tents leak. Use seam sealer.",
}
HH_PROMPT = [user("My tent leaks at the seams."), assistant("Sorry to hear that. Is it the Ridge 2?")]
HH_PROMPT += [user("Yes, bought in May.")]

# HuggingFaceH4/ultrafeedback_binarized rows: a text prompt, completions that repeat the user turn, 1-10 scores and
# columns no format uses (which must pass through, as must data11's metadata columns).
UF_ROW = {
    "prompt": "How do I waterproof boots?",
    "prompt_id": "a1b2",
    "chosen": [user("How do I waterproof boots?"), assistant("Clean them, then apply wax in thin coats.")],
    "rejected": [user("How do I waterproof boots?"), assistant("Buy new boots.")],
    "messages": [user("How do I waterproof boots?"), assistant("Clean them, then apply wax in thin coats.")],
    "score_chosen": 8.5,
    "score_rejected": 3.0,
    "intent": "care",
    "order_id": None,
}
UF_EXPECTED = {
    "prompt": [user("How do I waterproof boots?")],
    "chosen": [assistant("Clean them, then apply wax in thin coats.")],
    "rejected": [assistant("Buy new boots.")],
}


# HH-RLHF ------------------------------------------------------------------------------------------------------------


def test_hh_transcripts_become_prompt_and_message_completions(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [HH_ROW])
    record = load_records(str(path), "preferences")[0]
    assert record == {
        "prompt": HH_PROMPT,
        "chosen": [assistant("Then it is under warranty.\n\nSend us a photo and we will replace it.")],
        "rejected": [assistant("Tents leak. Use seam sealer.")],
    }
    assert classify("preferences", HH_ROW, "hh", 1)[1].startswith("HH-RLHF transcripts")


def test_hh_pair_differing_before_the_last_turn_keeps_the_shared_prompt(tmp_path):
    row = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Thanks\n\nAssistant: Any time.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: What.",
    }
    record = load_records(str(write_jsonl(tmp_path / "hh.jsonl", [row])), "preferences")[0]
    assert record["prompt"] == [user("Hi")]
    assert record["chosen"] == [assistant("Hello! How can I help?"), user("Thanks"), assistant("Any time.")]
    assert record["rejected"] == [assistant("What.")]


def test_hh_rows_give_ppo_prompts_ending_in_the_last_shared_human_turn(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [HH_ROW, {"chosen": HH_ROW["chosen"]}])
    assert load_records(str(path), "prompts") == [{"prompt": HH_PROMPT}, {"prompt": HH_PROMPT}]


MALFORMED_HH = [
    # (chosen, rejected, field, words)
    ("\n\nHuman: a\n\nHuman: b\n\nAssistant: c", "\n\nHuman: a\n\nAssistant: d", "chosen", "turn 2 is a second"),
    ("\n\nHuman: a\n\nAssistant: c", "\n\nHuman: a\n\nAssistant:", "rejected", "turn 2 ('Assistant:') is empty"),
    ("\n\nHuman: a\n\nAssistant: c", "Hello\n\nHuman: a\n\nAssistant: d", "rejected", "text before the first"),
    ("\n\nHuman: a\n\nAssistant: c", "\n\nHuman: a\n\nAssistant:  c ", "rejected", "identical"),
    ("\n\nHuman: a\n\nAssistant: c", "\n\nHuman: b\n\nAssistant: c", "rejected", "do not share an opening user"),
    ("\n\nHuman: a\n\nAssistant: c\n\nHuman: more", "\n\nHuman: a\n\nAssistant: c", "chosen", "ends with a"),
]


@pytest.mark.parametrize(
    ("chosen", "rejected", "field", "words"), MALFORMED_HH, ids=[m[3].split("(")[0].strip() for m in MALFORMED_HH]
)
def test_malformed_hh_transcripts_name_row_and_field(tmp_path, chosen, rejected, field, words):
    path = write_jsonl(tmp_path / "hh.jsonl", [HH_ROW, {"chosen": chosen, "rejected": rejected}])
    with pytest.raises(DataError) as info:
        load_records(str(path), "preferences")
    assert (info.value.source, info.value.row, info.value.field) == (str(path), 2, field)
    assert words in str(info.value)


# UltraFeedback -------------------------------------------------------------------------------------------------------


def test_ultrafeedback_rows_drop_the_repeated_user_turn_and_ignore_scores_by_default(tmp_path):
    path = write_jsonl(tmp_path / "uf.jsonl", [UF_ROW])
    assert load_records(str(path), "preferences") == [UF_EXPECTED]
    assert "UltraFeedback" in classify("preferences", UF_ROW, "uf", 1)[1]


def test_text_prompt_with_completions_that_do_not_repeat_it_becomes_a_user_turn(tmp_path):
    row = {**UF_ROW, "chosen": UF_EXPECTED["chosen"], "rejected": UF_EXPECTED["rejected"]}
    assert load_records(str(write_jsonl(tmp_path / "uf.jsonl", [row])), "preferences") == [UF_EXPECTED]


def test_scores_become_margins_when_the_recipe_asks(tmp_path):
    path = write_jsonl(tmp_path / "uf.jsonl", [UF_ROW, {**UF_ROW, "score_rejected": 8.5}])
    first, tie = load_records(str(path), "preferences", margin_from_scores=0.5)
    assert first == {**UF_EXPECTED, "margin": 2.75}
    assert tie["margin"] == 0.0
    assert classify("preferences", UF_ROW, "uf", 1, margin_from_scores=0.5)[1].endswith("with margin from scores")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"score_rejected": None}, "score_rejected", "missing field"),
        ({"score_chosen": "high"}, "score_chosen", "expected a number"),
        ({"score_chosen": 2.0}, "score_chosen", "below score_rejected"),
        ({"margin": 1.0}, "margin", "use one or the other"),
    ],
)
def test_bad_scores_are_located(tmp_path, change, field, words):
    path = write_jsonl(tmp_path / "uf.jsonl", [UF_ROW, {**UF_ROW, **change}])
    with pytest.raises(DataError) as info:
        load_records(str(path), "preferences", margin_from_scores=1.0)
    assert (info.value.row, info.value.field) == (2, field)
    assert words in str(info.value)


def test_a_repeated_user_turn_that_differs_from_the_prompt_is_refused(tmp_path):
    row = {**UF_ROW, "rejected": [user("Something else?"), assistant("Buy new boots.")]}
    with pytest.raises(DataError) as info:
        load_records(str(write_jsonl(tmp_path / "uf.jsonl", [row])), "preferences")
    assert info.value.field == "rejected[0].role"


def test_margin_from_scores_is_a_reward_stage_setting():
    from pydantic import ValidationError

    from rlhf.config import RewardStage, SFTStage

    data = {"train": "x.jsonl", "margin_from_scores": 0.5}
    assert RewardStage(stage="reward", output_dir="o", data=data).data.margin_from_scores == 0.5
    with pytest.raises(ValidationError, match="reward stage's pairs only"):
        SFTStage(stage="sft", output_dir="o", data=data)


# OpenAI-style messages -----------------------------------------------------------------------------------------------


def test_openai_messages_with_a_system_turn(tmp_path):
    row = {"messages": [system("You are Ridgeline support."), user("Hi"), assistant("Hello!")], "customer_name": "Sam"}
    path = write_jsonl(tmp_path / "sft.jsonl", [row, {"messages": row["messages"][1:]}])
    assert load_records(str(path), "demonstrations")[0] == {"messages": row["messages"]}
    scan = scan_file(str(path), "demonstrations", "train")
    assert scan.formats == {"messages with a system turn": 1, "messages": 1}
    assert scan.errors == []


# The chat template applies -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from rlhf.config import ModelConfig
    from rlhf.models.embedded import resolve_embedded
    from rlhf.models.loading import load_tokenizer

    return load_tokenizer(ModelConfig(name_or_path=str(resolve_embedded("embedded:tiny"))))


def test_converted_rows_render_through_the_chat_template(tmp_path, tokenizer):
    from rlhf.rewards.scoring import render

    hh = load_records(str(write_jsonl(tmp_path / "hh.jsonl", [HH_ROW])), "preferences")[0]
    uf = load_records(str(write_jsonl(tmp_path / "uf.jsonl", [UF_ROW])), "preferences")[0]
    for record in (hh, uf):
        for side in ("chosen", "rejected"):
            text = render(tokenizer, record["prompt"], record[side])
            assert text == tokenizer.apply_chat_template(record["prompt"] + record[side], tokenize=False)
            assert "Human:" not in text and "Assistant:" not in text
            # Every turn's text appears once: a repeated user turn would appear twice.
            assert text.count(record["prompt"][0]["content"]) == 1


# rlhf validate -------------------------------------------------------------------------------------------------------


def reward_recipe(tmp_path: Path, rows: list[dict], **data) -> Path:
    write_jsonl(tmp_path / "train.jsonl", rows)
    recipe = {
        "stage": "reward",
        "output_dir": str(tmp_path / "out"),
        "data": {"train": "train.jsonl", "max_length": 64, "max_prompt_length": 32, **data},
    }
    path = tmp_path / "reward.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def validate(capsys, recipe: Path) -> tuple[int, str, str]:
    code = main(["validate", str(recipe)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("rows", "data", "label"),
    [
        ([HH_ROW], {}, "HH-RLHF transcripts (parsed into prompt + chosen/rejected messages)"),
        ([UF_ROW], {}, "text prompt + message-list chosen/rejected repeating the user turn (UltraFeedback style)"),
        (
            [UF_ROW],
            {"margin_from_scores": 1.0},
            "text prompt + message-list chosen/rejected repeating the user turn (UltraFeedback style) with margin "
            "from scores",
        ),
    ],
    ids=["hh", "ultrafeedback", "ultrafeedback-margin"],
)
def test_validate_names_the_format_of_each_file(tmp_path, capsys, rows, data, label):
    code, out, err = validate(capsys, reward_recipe(tmp_path, rows, **data))
    assert code == 0, out + err
    assert f"train.jsonl: 1 rows (format: {label})" in out, out


def test_validate_refuses_a_malformed_hh_transcript_with_one_located_error(tmp_path, capsys):
    bad = {"chosen": "\n\nHuman: a\n\nHuman: b\n\nAssistant: c", "rejected": "\n\nHuman: a\n\nAssistant: d"}
    code, out, err = validate(capsys, reward_recipe(tmp_path, [HH_ROW, bad]))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert f"{tmp_path / 'train.jsonl'}, row 2, field 'chosen': HH-RLHF transcript: turn 2" in lines[0]
    assert "Traceback" not in err


# The reward stage trains on them -------------------------------------------------------------------------------------


def hh_rows(n: int) -> list[dict]:
    """n distinct HH pairs (the shared turns vary, so no row repeats another)."""
    return [{side: text.replace("seams", f"seams ({i})") for side, text in HH_ROW.items()} for i in range(n)]


def uf_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = f"How do I waterproof boots, pair {i}?"
        rows.append(
            {
                **UF_ROW,
                "prompt": prompt,
                "chosen": [user(prompt), UF_ROW["chosen"][1]],
                "rejected": [user(prompt), UF_ROW["rejected"][1]],
                "score_rejected": float(i % 5),
            }
        )
    return rows


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rows", "data"), [(hh_rows(8), {}), (uf_rows(8), {"margin_from_scores": 0.5})], ids=["hh", "ultrafeedback-margin"]
)
def test_reward_stage_trains_on_public_formats(tmp_path, capsys, rows, data):
    from rlhf.recipe import load_recipe
    from rlhf.stages.hf_trainer import load_dataset

    recipe = reward_recipe(tmp_path, rows, max_length=128, **data)
    train = load_dataset(load_recipe(recipe).data, "preferences")  # what the trainer receives
    assert isinstance(train[0]["prompt"], list) and train[0]["chosen"][0]["role"] == "assistant"
    assert ("margin" in train.column_names) == ("margin_from_scores" in data)
    overrides = [
        "training.max_steps=2",
        "training.batch_size=4",
        "training.save_steps=null",
        "training.logging_steps=1",
    ]
    code = main(["run", str(recipe), *overrides])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["stage"] == "reward"
    losses = [json.loads(line).get("loss") for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [loss for loss in losses if loss is not None], "no training loss was logged"
