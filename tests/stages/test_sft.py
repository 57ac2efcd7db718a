"""The sft stage on the embedded model: loss falls, final/ loads and answers, the run leaves its records."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from rlhf.artifacts import ArtifactError, check_parent, file_sha256, recipe_hash
from rlhf.models.loading import resolve_model_path
from rlhf.pipeline import run_recipe
from rlhf.recipe import load_recipe

from ..conftest import DATA_DIR, PIPELINE, SHORT_RUN

pytestmark = pytest.mark.slow

TINY = [
    "stages=[sft]",
    "tracking.report_to=[none]",
    "sft.data.max_train_rows=32",
    "sft.data.eval=null",
    "sft.training.max_steps=2",
    "sft.training.batch_size=4",
    "sft.training.logging_steps=1",
    "sft.training.save_steps=null",
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def sft_dir(short_run) -> Path:
    return short_run / "sft"


@pytest.fixture(scope="module")
def manifest(sft_dir) -> dict:
    return json.loads((sft_dir / "manifest.json").read_text())


def test_eval_loss_falls(manifest):
    results = manifest["results"]
    assert results["eval_loss_start"] is not None and results["eval_loss_end"] is not None
    assert results["eval_loss_end"] < results["eval_loss_start"]
    assert math.isfinite(results["train_loss"])
    assert results["steps"] == 20
    assert results["train_rows"] == 320 and results["eval_rows"] == 32


def test_metrics_are_logged_per_step(sft_dir):
    rows = read_jsonl(sft_dir / "metrics.jsonl")
    losses = [row for row in rows if "loss" in row]
    assert len(losses) >= 2
    assert all(math.isfinite(row["loss"]) for row in losses)
    assert [row["step"] for row in losses] == sorted(row["step"] for row in losses)
    assert any("eval_loss" in row for row in rows)


def test_run_leaves_recipe_and_manifest(sft_dir, manifest, short_run):
    for name in ("recipe.yaml", "metrics.jsonl", "manifest.json"):
        assert (sft_dir / name).is_file(), name
    assert manifest["stage"] == "sft" and manifest["status"] == "complete"
    train, evaluation = DATA_DIR / "sft_train.jsonl", DATA_DIR / "sft_eval.jsonl"
    assert manifest["data"] == {str(train): file_sha256(train), str(evaluation): file_sha256(evaluation)}
    assert manifest["parents"]["model"]["path"] == resolve_model_path("embedded:base")
    assert manifest["seed"] == 42
    assert {"torch", "transformers", "trl"} <= set(manifest["versions"])

    # The written recipe is the recipe that ran, fully resolved: it validates back to an equal object.
    ran = load_recipe(PIPELINE, [f"run_dir={short_run}", *SHORT_RUN]).sft
    written = load_recipe(sft_dir / "recipe.yaml")
    assert written == ran
    assert manifest["recipe_sha256"] == recipe_hash(written)
    assert yaml.safe_load((sft_dir / "recipe.yaml").read_text())["training"]["max_steps"] == 20


def test_final_reloads_with_transformers(sft_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(sft_dir / "final")
    tokenizer = AutoTokenizer.from_pretrained(sft_dir / "final")
    assert tokenizer.chat_template and tokenizer.pad_token and tokenizer.eos_token == "<|end|>"
    assert model.config.vocab_size == len(tokenizer)


def test_greedy_replies_on_held_out_prompts_are_not_empty(sft_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(sft_dir / "final").eval()
    tokenizer = AutoTokenizer.from_pretrained(sft_dir / "final", padding_side="left")
    prompts = [row["prompt"] for row in read_jsonl(DATA_DIR / "eval_prompts.jsonl")[:20]]
    batch = tokenizer.apply_chat_template(
        prompts, add_generation_prompt=True, padding=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=48, do_sample=False)
    replies = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert len(replies) == 20
    empty = [prompt for prompt, reply in zip(prompts, replies, strict=True) if not reply.strip()]
    assert not empty, f"{len(empty)} empty replies, e.g. to {empty[0]}"


def test_final_is_a_checked_parent(sft_dir, tmp_path):
    lineage = check_parent(sft_dir / "final", expected_stage="sft")
    assert lineage["stage"] == "sft"
    with pytest.raises(ArtifactError, match="expected 'reward'"):
        check_parent(sft_dir / "final", expected_stage="reward")
    # Without its manifest the same directory is a half-written artifact and is refused.
    copy = tmp_path / "sft"
    copy.mkdir()
    shutil.copy(sft_dir / "recipe.yaml", copy / "recipe.yaml")
    shutil.copytree(sft_dir / "final", copy / "final")
    with pytest.raises(ArtifactError, match="half-written"):
        check_parent(copy / "final")


def test_lora_run_writes_an_adapter_peft_loads(tmp_path):
    import torch
    from peft import AutoPeftModelForCausalLM, PeftModel

    from rlhf.config import ModelConfig
    from rlhf.models.loading import load_causal_lm

    [out] = run_recipe(load_recipe(PIPELINE, [f"run_dir={tmp_path}", *TINY, "sft.model.lora.r=4"]))
    final = out / "final"
    assert (final / "adapter_config.json").is_file()
    assert not (final / "model.safetensors").exists()  # an adapter, not a full copy of the weights
    assert json.loads((final / "adapter_config.json").read_text())["r"] == 4
    model = AutoPeftModelForCausalLM.from_pretrained(final)
    assert isinstance(model, PeftModel)
    ids = torch.tensor([[model.config.bos_token_id]])
    assert model.generate(input_ids=ids, max_new_tokens=3, do_sample=False).shape[1] > 1
    merged = load_causal_lm(ModelConfig(), str(final))  # what a later stage sees: plain, merged weights
    assert not isinstance(merged, PeftModel)
    assert json.loads((out / "manifest.json").read_text())["results"]["steps"] == 2


def test_prompt_completion_data(tmp_path):
    from transformers import AutoModelForCausalLM

    rows = read_jsonl(DATA_DIR / "sft_train.jsonl")[:16]
    data = tmp_path / "pc.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": row["messages"][0]["content"] + "\n", "completion": row["messages"][-1]["content"]})
            + "\n"
            for row in rows
        )
    )
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "stage": "sft",
                "output_dir": str(tmp_path / "out"),
                "data": {"train": data.name, "eval": data.name, "max_eval_rows": 4},
                "training": {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "save_steps": None},
            }
        )
    )
    [out] = run_recipe(load_recipe(recipe))
    results = json.loads((out / "manifest.json").read_text())["results"]
    assert results["steps"] == 2 and results["train_rows"] == 16
    assert math.isfinite(results["train_loss"]) and math.isfinite(results["eval_loss_end"])
    trained, info = AutoModelForCausalLM.from_pretrained(out / "final", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    start = AutoModelForCausalLM.from_pretrained(resolve_model_path("embedded:tiny"))
    moved = [name for name, p in trained.named_parameters() if not p.equal(start.get_parameter(name))]
    assert "model.layers.0.self_attn.q_proj.weight" in moved  # two steps trained the weights that were saved
