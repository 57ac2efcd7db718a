"""`training.mixed_precision`: bf16 autocast over float32 weights, taken by `auto` only where bf16 is native.

The ppo stage runs its matrix products in bf16 (update, scoring and sampling) while the weights it saves stay float32,
and its old log-probs come from the trainer's own numerics (the sampler-trainer gap is logged); the Trainer stages
get the Trainer's `bf16` switch; the schema refuses the setting on weights that are not float32.
"""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from rlhf.config import SFTStage
from rlhf.precision import cpu_has_native_bf16, resolve_mixed_precision

from ..conftest import DATA_DIR

SFT = {"stage": "sft", "output_dir": "out", "data": {"train": "d.jsonl"}}


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("flags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni", True),  # AMD Zen 4 / Intel Cooper Lake
        ("flags\t\t: fpu sse avx512f amx_bf16 amx_tile", True),  # Intel Sapphire Rapids
        ("Features\t: fp asimd bf16 i8mm", True),  # Arm with the BF16 extension
        ("flags\t\t: fpu sse avx2 avx512f avx512bw", False),  # AVX-512 without bf16: emulated, slower than fp32
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\n{flags}\n\nprocessor\t: 1\n{flags}\n")
    assert cpu_has_native_bf16(cpuinfo) is native
    assert cpu_has_native_bf16(tmp_path / "missing") is False


def test_auto_resolves_by_the_hardware_and_explicit_settings_stand(monkeypatch):
    import rlhf.precision as precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: device == "cpu")
    assert resolve_mixed_precision("auto", "cpu") == "bf16"
    assert resolve_mixed_precision("auto", "cuda") == "no"
    assert resolve_mixed_precision("no", "cpu") == "no"
    assert resolve_mixed_precision("bf16", "cuda") == "bf16"


def test_mixed_precision_needs_float32_weights():
    with pytest.raises(ValidationError, match=r"training.mixed_precision: bf16 needs model.dtype float32"):
        SFTStage.model_validate({**SFT, "model": {"dtype": "bfloat16"}, "training": {"mixed_precision": "bf16"}})
    SFTStage.model_validate({**SFT, "training": {"mixed_precision": "auto"}})


def test_an_unquoted_no_in_yaml_means_no(tmp_path, capsys):
    from rlhf.cli import main
    from rlhf.recipe import load_recipe

    # YAML reads `no` as false: the documented value, written as a user writes it, in a file and as an override.
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        f"stage: sft\noutput_dir: {tmp_path / 'out'}\ndata: {{train: {DATA_DIR / 'sft_train.jsonl'}}}\n"
        "training:\n  mixed_precision: no\n"
    )
    assert load_recipe(recipe, []).training.mixed_precision == "no"
    assert load_recipe(recipe, ["training.mixed_precision=no"]).training.mixed_precision == "no"
    assert load_recipe(recipe, ["training.mixed_precision=bf16"]).training.mixed_precision == "bf16"
    assert main(["validate", str(recipe), "training.mixed_precision=yes"]) == 2
    assert "training.mixed_precision: Input should be 'no', 'bf16' or 'auto'" in capsys.readouterr().err


def test_a_deepspeed_launch_refuses_autocast_and_auto_stays_off(monkeypatch, tmp_path):
    from rlhf.cli import main
    from rlhf.precision import PrecisionError

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(PrecisionError, match="set model.dtype: bfloat16 instead"):
        resolve_mixed_precision("bf16", "cpu", "ppo")
    assert resolve_mixed_precision("auto", "cpu", "ppo") == "no"
    # The command line turns it into one error line and exit 2, before any model is loaded.
    recipe = tmp_path / "ppo.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path / "out", data=DATA_DIR))
    assert main(["run", str(recipe)]) == 2
    assert not (tmp_path / "out" / "final").exists()


@pytest.mark.parametrize(("setting", "bf16"), [("bf16", True), ("no", False)])
def test_trainer_stages_turn_on_the_trainers_bf16_autocast(tmp_path, setting, bf16):
    from rlhf.stages.hf_trainer import training_arguments

    stage = SFTStage.model_validate({**SFT, "training": {"mixed_precision": setting}})
    args = training_arguments(stage, tmp_path, has_eval=False)
    assert args["bf16"] is bf16
    assert args["fp16"] is False


RECIPE = """
stage: ppo
seed: 5
output_dir: {out}
model: {{name_or_path: embedded:tiny}}
data: {{train: {data}/ppo_prompts.jsonl, max_train_rows: 16, max_prompt_length: 64, max_length: 80}}
rewards:
  - {{name: voice_rules, function: brand_voice, weight: 1.0}}
value: {{mode: head}}
rollout: {{max_new_tokens: 8}}
update: {{epochs: 1, num_minibatches: 2}}
training: {{learning_rate: 1.0e-3, batch_size: 4, max_steps: 2, save_steps: null, mixed_precision: bf16}}
tracking: {{report_to: [none]}}
"""


@pytest.mark.slow
def test_ppo_under_bf16_autocast_multiplies_in_bf16_and_keeps_float32_weights(tmp_path):
    from safetensors.torch import load_file

    from rlhf.cli import main

    out = tmp_path / "out"
    recipe = tmp_path / "ppo.yaml"
    recipe.write_text(RECIPE.format(out=out, data=DATA_DIR))
    dtypes: set[torch.dtype] = set()
    grad_dtypes: set[torch.dtype] = set()

    def record(module, args, output):
        dtypes.add(output.dtype)
        if output.requires_grad:  # a training forward (the update), not a no-grad sampling or scoring pass
            grad_dtypes.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: record(module, args, output) if isinstance(module, torch.nn.Linear) else None
    )
    try:
        assert main(["run", str(recipe)]) == 0
    finally:
        handle.remove()
    from accelerate import Accelerator

    # Accelerate keeps one process-wide state: the stage hands it back, so what runs next in the process (a user's
    # own Accelerator, a later stage) does not inherit bf16.
    assert Accelerator(cpu=True).mixed_precision == "no"

    assert grad_dtypes == {torch.bfloat16}, "the update's linear layers ran in bf16"
    assert dtypes == {torch.bfloat16}, "sampling and scoring ran under the same autocast"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "loss/policy" in row]
    assert len(steps) == 2
    # auto recompute: the sampler's and the trainer's log-probs are both bf16 products, in another order.
    assert all("rollout/logprob_gap_mean" in row for row in steps)
    assert all(0 <= row["rollout/logprob_gap_mean"] < 0.1 for row in steps)
    final = load_file(out / "final" / "model.safetensors")
    assert {tensor.dtype for tensor in final.values()} == {torch.float32}
    saved = load_file(out / "checkpoints" / "checkpoint-2" / "accelerate" / "model.safetensors")
    assert {tensor.dtype for tensor in saved.values()} == {torch.float32}
