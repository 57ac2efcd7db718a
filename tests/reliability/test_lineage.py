"""Lineage: a stage refuses upstream artifacts that are missing, half-written, modified or of the wrong kind."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import yaml

from rlhf.artifacts import ArtifactError, check_parent, up_to_date, write_manifest
from rlhf.config import ModelConfig
from rlhf.pipeline import check_stage_references
from rlhf.stages.registry import PipelineRecipe

from .conftest import GOOD_PREFS, GOOD_SFT, write_jsonl

CAUSAL_LM = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
REWARD_MODEL = {"model_type": "llama", "architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "L"}}


def artifact(
    stage_dir: Path,
    stage: str,
    *,
    manifest: bool | str = True,
    config: dict | None = None,
    final_files: dict | None = None,
    finished_at: str = "2026-01-01T00:00:00Z",
) -> Path:
    """A fabricated stage output: final/config.json, recipe.yaml and (unless told otherwise) a complete manifest."""
    final = stage_dir / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text(json.dumps(config or (REWARD_MODEL if stage == "reward" else CAUSAL_LM)))
    (stage_dir / "recipe.yaml").write_text(f"stage: {stage}\n")
    if manifest is True:
        if final_files is None:
            final_files = {"config.json": (final / "config.json").stat().st_size}
        (stage_dir / "manifest.json").write_text(
            json.dumps(
                {
                    "stage": stage,
                    "status": "complete",
                    "recipe_sha256": "abc",
                    "finished_at": finished_at,
                    "final_files": final_files,
                }
            )
        )
    elif isinstance(manifest, str):
        (stage_dir / "manifest.json").write_text(manifest)
    return final


def stage_recipe(tmp_path: Path, stage: str, **fields) -> Path:
    rows = {"reward": GOOD_PREFS, "sft": GOOD_SFT}.get(stage, [{"prompt": "q"}])
    write_jsonl(tmp_path / "train.jsonl", rows)
    recipe = {
        "stage": stage,
        "output_dir": str(tmp_path / "out"),
        "data": {"train": "train.jsonl", "max_length": 64, "max_prompt_length": 32},
        **fields,
    }
    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_half_written_upstream_artifact(tmp_path, cli):
    final = artifact(tmp_path / "sft", "sft", manifest=False)
    code, _, err = cli("validate", stage_recipe(tmp_path, "reward", model={"name_or_path": str(final)}))
    assert code == 2
    assert (
        f"{tmp_path / 'sft'} has no manifest.json: the stage that writes it did not finish (half-written artifact)"
    ) in err


def test_damaged_manifest(tmp_path):
    final = artifact(tmp_path / "sft", "sft", manifest='{"stage": "sf')
    with pytest.raises(ArtifactError, match="manifest.json is not valid JSON .*: the artifact is damaged"):
        check_parent(final)


def test_upstream_artifact_of_the_wrong_stage(tmp_path, cli):
    final = artifact(tmp_path / "sft", "sft", config=REWARD_MODEL)  # looks like a classifier; lineage says otherwise
    recipe = stage_recipe(tmp_path, "ppo", rewards=[{"name": "learned", "model": str(final)}])
    code, _, err = cli("validate", recipe)
    assert code == 2 and f"{final} comes from a 'sft' stage, expected 'reward'" in err


def test_upstream_artifact_with_missing_or_changed_files(tmp_path):
    final = artifact(tmp_path / "sft", "sft", final_files={"config.json": 3, "model.safetensors": 10})
    with pytest.raises(
        ArtifactError,
        match=r"does not hold the files its manifest recorded \(missing "
        r"model.safetensors; changed size config.json\)",
    ):
        check_parent(final)


def test_reward_model_directory_that_is_not_a_sequence_classifier(tmp_path, cli):
    model_dir = tmp_path / "policy"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(CAUSAL_LM))
    code, _, err = cli("validate", stage_recipe(tmp_path, "ppo", rewards=[{"name": "rm", "model": str(model_dir)}]))
    assert code == 2
    assert (
        f"rewards.0.model: {model_dir} is not a reward model: expected a *ForSequenceClassification "
        "architecture with one label, found ['LlamaForCausalLM'] with 2 labels"
    ) in err

    from rlhf.models.loading import ModelLoadError, load_reward_model

    with pytest.raises(ModelLoadError, match="is not a reward model"):  # the same check when ppo loads it
        load_reward_model(str(model_dir))

    # With the implicit reward marker the causal LM is a reward model; a malformed marker is named.
    (model_dir / "implicit_reward.json").write_text('{"beta": -1, "reference": null}')
    code, _, err = cli("validate", stage_recipe(tmp_path, "ppo", rewards=[{"name": "rm", "model": str(model_dir)}]))
    assert code == 2 and f"rewards.0.model: {model_dir}/implicit_reward.json: beta must be positive" in err
    (model_dir / "implicit_reward.json").write_text('{"beta": 0.1, "reference": null}')
    code, _, err = cli("validate", stage_recipe(tmp_path, "ppo", rewards=[{"name": "rm", "model": str(model_dir)}]))
    assert "rewards.0.model" not in err


def test_pipeline_stage_that_was_never_run(tmp_path, cli):
    write_jsonl(tmp_path / "prefs.jsonl", GOOD_PREFS)
    recipe = tmp_path / "pipeline.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(tmp_path / "run"),
                "stages": ["reward"],
                "sft": {"data": {"train": "prefs.jsonl"}},
                "reward": {"model": {"name_or_path": "stage:sft"}, "data": {"train": "prefs.jsonl"}},
            }
        )
    )
    code, _, err = cli("validate", recipe)
    assert code == 2
    assert (
        f"reward.model.name_or_path refers to 'stage:sft', which this run does not run (stages: ['reward']), "
        f"and {tmp_path / 'run' / 'sft' / 'final'} does not exist: run sft first"
    ) in err
    artifact(tmp_path / "run" / "sft", "sft", manifest=False)
    code, _, err = cli("validate", recipe)
    assert code == 2 and "half-written artifact" in err
    (tmp_path / "run" / "sft" / "manifest.json").write_text(
        json.dumps({"stage": "sft", "status": "complete", "recipe_sha256": "x"})
    )
    code, _, err = cli("validate", recipe)
    assert code == 0, err


def test_pipeline_references_are_checked_again_when_the_stage_starts(tmp_path):
    pipeline = PipelineRecipe.model_validate(
        {
            "run_dir": str(tmp_path),
            "sft": {"data": {"train": "org/set"}},
            "ppo": {
                "model": {"name_or_path": "stage:sft"},
                "data": {"train": "org/prompts"},
                "rewards": [{"name": "rules", "function": "brand_voice"}],
            },
        }
    )
    with pytest.raises(ArtifactError, match="is not the final/ output of a 'sft' stage"):
        check_stage_references(pipeline.ppo, pipeline)
    artifact(tmp_path / "sft", "reward")  # a reward artifact where the sft one should be
    with pytest.raises(ArtifactError, match="comes from a 'reward' stage, expected 'sft'"):
        check_stage_references(pipeline.ppo, pipeline)


def test_manifest_records_final_files_and_a_rerun_parent_invalidates_the_child(tmp_path):
    from rlhf.config import RewardStage

    parent = artifact(tmp_path / "sft", "sft")
    write_jsonl(tmp_path / "prefs.jsonl", GOOD_PREFS)
    cfg = RewardStage.model_validate(
        {
            "stage": "reward",
            "output_dir": str(tmp_path / "reward"),
            "model": {"name_or_path": str(parent)},
            "data": {"train": str(tmp_path / "prefs.jsonl")},
        }
    )
    final = tmp_path / "reward" / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text(json.dumps(REWARD_MODEL))
    (final / "model.safetensors").write_bytes(b"0123456789")
    from rlhf.artifacts import data_hashes

    manifest = write_manifest(
        tmp_path / "reward",
        cfg,
        data=data_hashes(cfg.data.train, cfg.data.eval),
        parents={"model": check_parent(parent)},
        results={},
        started=0.0,
    )
    assert manifest["final_files"] == {"config.json": len(json.dumps(REWARD_MODEL)), "model.safetensors": 10}
    assert check_parent(final, expected_stage="reward")["stage"] == "reward"
    assert up_to_date(cfg)

    record = json.loads((tmp_path / "sft" / "manifest.json").read_text())
    (tmp_path / "sft" / "manifest.json").write_text(json.dumps({**record, "finished_at": "2026-02-02T00:00:00Z"}))
    assert not up_to_date(cfg)  # the sft stage ran again since: the reward model must be retrained


def test_tokenizer_without_a_pad_token_falls_back_to_eos(tmp_path, caplog):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rlhf.models.loading import ModelLoadError, load_tokenizer

    def save(directory: Path, **special) -> Path:
        raw = Tokenizer(models.WordLevel({"<unk>": 0, "<eos>": 1, "hi": 2}, unk_token="<unk>"))
        raw.pre_tokenizer = pre_tokenizers.Whitespace()
        PreTrainedTokenizerFast(
            tokenizer_object=raw, unk_token="<unk>", chat_template="{{ messages }}", **special
        ).save_pretrained(directory)
        return directory

    caplog.set_level(logging.WARNING, logger="rlhf")
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(save(tmp_path / "no_pad", eos_token="<eos>"))))
    assert tokenizer.pad_token == "<eos>"
    assert "has no pad token; using its EOS token '<eos>'" in caplog.text
    with pytest.raises(ModelLoadError, match="has neither a pad nor an EOS token; add a pad token"):
        load_tokenizer(ModelConfig(name_or_path=str(save(tmp_path / "neither"))))


def test_a_refused_rerun_leaves_the_finished_artifact_usable(tmp_path):
    from rlhf.checkpoint import ResumeError, step_dir, write_marker
    from rlhf.config import SFTStage
    from rlhf.pipeline import run_stage

    write_jsonl(tmp_path / "train.jsonl", GOOD_SFT)
    out = tmp_path / "out"
    final = artifact(out, "sft")
    os.utime(final / "config.json", (1e9, 1e9))  # written by an earlier run
    step_dir(out / "checkpoints", 2).mkdir(parents=True)
    write_marker(step_dir(out / "checkpoints", 2), {"recipe": {"seed": 1}}, 2)
    cfg = SFTStage.model_validate(
        {"stage": "sft", "output_dir": str(out), "data": {"train": str(tmp_path / "train.jsonl")}}
    )
    with pytest.raises(ResumeError, match="seed: 1 in the checkpoint, 42 now"):
        run_stage(cfg)  # the recipe hash differs from the manifest's, so the stage runs, and its resume is refused
    assert check_parent(final)["stage"] == "sft"  # final/ was not touched: the manifest is back
