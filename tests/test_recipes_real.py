"""The recipes for real models (recipes/tldr, recipes/hh_rlhf): checked offline, planned offline, and the two knobs
they need (`data.eval_split` for hub datasets without a 'test' split, `model.chat_template` for Pythia)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.cli import main
from rlhf.config import DataConfig
from rlhf.planner import LaunchSpec, plan_recipe
from rlhf.recipe import load_recipe

from .conftest import REPO_ROOT

REAL = {
    "tldr": REPO_ROOT / "recipes" / "tldr" / "pipeline.yaml",
    "hh_rlhf": REPO_ROOT / "recipes" / "hh_rlhf" / "pipeline.yaml",
}
# The architecture numbers the recipes' memory tables were planned from (their header comments say how). Pythia's
# two-matrix MLP (8192 wide) is given as the planner's gated three-matrix MLP of the same parameter count.
ARCHITECTURES = {
    "tldr": {
        "hidden_size": 2048,
        "intermediate_size": 5461,
        "num_attention_heads": 8,
        "num_hidden_layers": 16,
        "vocab_size": 50304,
        "tie_word_embeddings": False,
    },
    "hh_rlhf": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "num_hidden_layers": 24,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "attention_bias": True,
    },
}
FIRST_STAGE = {"tldr": ["sft"], "hh_rlhf": ["reward", "ppo"]}  # stages that name the hub model


@pytest.fixture
def no_hub(monkeypatch):
    """Makes any download attempt fail loudly, so a passing check proves nothing was fetched."""
    import datasets
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to fetch from the hub: {args} {kwargs}")

    for module, name in ((datasets, "load_dataset"), (huggingface_hub, "hf_hub_download")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


@pytest.mark.parametrize("name", list(REAL))
def test_real_recipe_validates_offline_naming_hub_data_and_models(name, no_hub, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # run_dir is relative: keep the check's output-directory rule away from the repo
    code = main(["validate", str(REAL[name])])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert f"ok: {REAL[name]}" in out
    recipe = load_recipe(REAL[name])
    for stage in recipe.selected_stages():
        data = getattr(stage, "data", None)
        if data is not None:
            assert f"hub {data.train} [{data.split}], {data.eval} [{data.eval_split}] (checked when loaded)" in out


@pytest.mark.parametrize("name", list(REAL))
def test_real_recipe_header_gives_launch_command_memory_and_time(name):
    header = "".join(line for line in REAL[name].read_text().splitlines(keepends=True) if line.startswith("#"))
    relative = REAL[name].relative_to(REPO_ROOT)
    assert (
        f"accelerate launch --config_file recipes/launch/zero2.yaml --num_processes 8 -m rlhf run {relative}" in header
    )
    assert f"rlhf plan {relative}" in header and "1 GPU" in header and "8 GPUs" in header
    assert "Expected GPU time" in header and "not measured" in header


def write_config(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(ARCHITECTURES[name]), encoding="utf-8")
    return directory


@pytest.mark.parametrize("name", list(REAL))
def test_real_recipe_plans_offline_from_a_config_directory(name, tmp_path, no_hub, capsys):
    shapes = write_config(tmp_path / "shapes", name)
    overrides = [f"{stage}.model.name_or_path={shapes}" for stage in FIRST_STAGE[name]]
    code = main(["plan", str(REAL[name]), *overrides, "--launch", "recipes/launch/zero2.yaml", "--num-processes", "8"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    recipe = load_recipe(REAL[name], overrides)
    trained = [s.stage for s in recipe.selected_stages() if s.stage != "compare"]
    assert [line for line in out.splitlines() if line in trained] == trained
    # Sharding over 8 GPUs lowers every stage's memory per device below one GPU's under the same ZeRO stage.
    one = plan_recipe(recipe, LaunchSpec.from_file(REPO_ROOT / "recipes/launch/zero2.yaml", 1))
    eight = plan_recipe(recipe, LaunchSpec.from_file(REPO_ROOT / "recipes/launch/zero3.yaml", 8))
    assert all(e.total < o.total for e, o in zip(eight, one, strict=True))


def test_plan_without_the_config_offline_says_so(no_hub, capsys):
    code = main(["plan", str(REAL["tldr"]), "--launch", "recipes/launch/zero2.yaml"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "error: cannot read config.json of 'EleutherAI/pythia-1b-deduped'" in err


# data.eval_split: hub datasets whose held-out split is not called 'test' -------------------------------------------


def test_eval_split_names_the_held_out_split_of_a_hub_style_dataset(tmp_path):
    from rlhf.stages.hf_trainer import load_dataset

    # A local directory is loaded the way a hub dataset is (datasets.load_dataset infers splits from file names).
    source = tmp_path / "tldr-preference"
    source.mkdir()
    for split, n in (("train", 3), ("validation", 2)):
        rows = [{"prompt": f"POST {split} {i}\nTL;DR:", "chosen": " good", "rejected": " bad"} for i in range(n)]
        (source / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    data = DataConfig(train=str(source), eval=str(source), eval_split="validation")
    assert len(load_dataset(data, "preferences", "train")) == 3
    held_out = load_dataset(data, "preferences", "eval")
    assert [r["prompt"] for r in held_out] == ["POST validation 0\nTL;DR:", "POST validation 1\nTL;DR:"]
    with pytest.raises(ValueError, match="test"):  # the default names a split this dataset does not have
        load_dataset(DataConfig(train=str(source), eval=str(source)), "preferences", "eval")


# model.chat_template: the plain-text template of the TL;DR recipe --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    from rlhf.models.embedded import resolve_embedded

    return resolve_embedded("embedded:tiny")


def test_chat_template_replaces_the_tokenizers_own(tiny_dir):
    from rlhf.config import ModelConfig
    from rlhf.models.loading import load_tokenizer

    template = load_recipe(REAL["tldr"]).sft.model.chat_template
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(tiny_dir), chat_template=template))
    own = load_tokenizer(ModelConfig(name_or_path=str(tiny_dir)))
    prompt = [{"role": "user", "content": "POST: my tent leaks\nTL;DR:"}]
    reply = [{"role": "assistant", "content": " tent leaks"}]
    # The TL;DR template renders the plain text sft and reward train on: prompt, summary, EOS.
    assert tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) == prompt[0]["content"]
    text = tokenizer.apply_chat_template(prompt + reply, tokenize=False)
    assert text == "POST: my tent leaks\nTL;DR: tent leaks" + tokenizer.eos_token
    assert own.apply_chat_template(prompt + reply, tokenize=False) != text


def test_the_data_doctor_counts_with_the_recipes_template(tiny_dir):
    from rlhf.data.lengths import load_doctor_tokenizer

    recipe = load_recipe(REAL["tldr"], [f"sft.model.name_or_path={tiny_dir}"])
    for stage in (recipe.sft, recipe.reward):  # reward inherits it through stage:sft
        light, how = load_doctor_tokenizer(stage, recipe)
        assert light is not None, how
        assert light.chat_template == recipe.sft.model.chat_template
        assert light.render([{"role": "user", "content": "Q"}, {"role": "assistant", "content": " A"}]) == (
            "Q A" + light.eos_token
        )
