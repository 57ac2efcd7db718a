"""The shipped launch configs: documented, loadable by accelerate, hardware-free, with "auto" DeepSpeed values."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from .launching import LAUNCH_DIR, REPO_ROOT

CONFIGS = sorted(LAUNCH_DIR.glob("*.yaml"))
# Filled by the Trainer (or accelerate, for ppo's own loop) from the recipe's training block and model.dtype.
AUTO = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping")


def test_every_layout_is_shipped():
    assert {p.stem for p in CONFIGS} == {"single", "ddp", "zero1", "zero2", "zero3", "zero3_offload", "two_nodes"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_is_documented_and_loads(path):
    from accelerate.commands.config.config_args import load_config_from_file

    text = path.read_text()
    assert text.startswith("#") and f"accelerate launch --config_file recipes/launch/{path.stem}.yaml" in text
    assert "-m rlhf run recipes/brand_voice/pipeline.yaml" in text
    cfg = yaml.safe_load(text)
    # use_cpu true would make `accelerate launch` start a single process; rlhf picks the CPU itself.
    assert cfg["use_cpu"] is False
    # Precision belongs to the recipe (model.dtype), and DeepSpeed refuses it next to a config file.
    assert "mixed_precision" not in cfg or cfg["distributed_type"] != "DEEPSPEED"
    loaded = load_config_from_file(str(path))
    assert loaded.distributed_type == cfg["distributed_type"]
    if cfg["distributed_type"] == "DEEPSPEED":
        assert (REPO_ROOT / cfg["deepspeed_config"]["deepspeed_config_file"]).is_file()


@pytest.mark.parametrize("path", sorted((LAUNCH_DIR / "deepspeed").glob("*.json")), ids=lambda p: p.stem)
def test_deepspeed_json_takes_the_recipe_values(path):
    cfg = json.loads(path.read_text())
    for key in AUTO:
        assert cfg[key] == "auto", key
    assert cfg["bf16"]["enabled"] == "auto" and cfg["fp16"]["enabled"] == "auto"
    zero = cfg["zero_optimization"]
    # Bucket sizes are numbers: "auto" would need a transformers config on the prepared module (ppo's is a wrapper).
    assert not [k for k, v in zero.items() if v == "auto"]
    if zero["stage"] == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["stage"] == int(path.stem[4])


def test_cli_imports_nothing_heavy():
    # rlhf.distributed.prepare_environment sets DS_ACCELERATOR before DeepSpeed is imported; that only works while
    # `python -m rlhf` reaches it before anything imports torch, transformers or deepspeed.
    code = (
        "import sys, rlhf.cli, rlhf.pipeline; "
        "print(sorted(m for m in ('torch', 'transformers', 'deepspeed', 'accelerate') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "[]"
