"""rlhf.distributed on its own: environment reading, Trainer arguments, the DeepSpeed config filling, and a real gloo
world of 2 (two spawned processes) for the Accelerator, reductions, frozen models and the launch summary.

The launched pipeline tests (tests/distributed/) cover the same module under `accelerate launch` with DeepSpeed; these
run in seconds and name the function that broke.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlhf import distributed


def test_world_and_rank_come_from_the_launcher_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert distributed.world_size() == 1 and distributed.is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert distributed.world_size() == 4 and not distributed.is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert distributed.is_main_process()


def test_deepspeed_is_used_only_when_the_launch_says_so(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    assert not distributed.using_deepspeed()
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "True")  # accelerate writes it capitalised
    assert distributed.using_deepspeed()
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "false")
    assert not distributed.using_deepspeed()


def test_cpu_environment_and_trainer_arguments(monkeypatch):
    monkeypatch.setattr(distributed, "cuda_available", lambda: False)
    # Set, then deleted, through monkeypatch: it records the session's value (or its absence) and restores it, even
    # though prepare_environment writes os.environ behind its back.
    monkeypatch.setenv("DS_ACCELERATOR", "unset-below")
    monkeypatch.delenv("DS_ACCELERATOR")
    distributed.prepare_environment()
    assert os.environ["DS_ACCELERATOR"] == "cpu"
    monkeypatch.setenv("DS_ACCELERATOR", "xpu")  # a choice the user made is kept
    distributed.prepare_environment()
    assert os.environ["DS_ACCELERATOR"] == "xpu"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.trainer_arguments() == {"use_cpu": True}
    monkeypatch.setenv("WORLD_SIZE", "2")  # without gloo every rank would believe it is alone
    assert distributed.trainer_arguments() == {"use_cpu": True, "ddp_backend": "gloo"}
    monkeypatch.setattr(distributed, "cuda_available", lambda: True)
    assert distributed.trainer_arguments() == {}


def _plugin_state(config: dict, processes: int = 2) -> SimpleNamespace:
    """What `configure_deepspeed` reads of an Accelerator, around a real accelerate DeepSpeedPlugin.

    Accelerate itself writes the accumulation steps into the DeepSpeed config (1 when unset, as here).
    """
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(hf_ds_config=config)
    return SimpleNamespace(
        state=SimpleNamespace(deepspeed_plugin=plugin), gradient_accumulation_steps=1, num_processes=processes
    )


def test_configure_deepspeed_fills_the_auto_values():
    accelerator = _plugin_state(
        {
            "train_micro_batch_size_per_gpu": "auto",
            "train_batch_size": "auto",
            "gradient_clipping": "auto",
            "zero_optimization": {"stage": 3},
        }
    )
    distributed.configure_deepspeed(accelerator, micro_batch_size=4, max_grad_norm=0.5)
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    assert config["train_micro_batch_size_per_gpu"] == 4 and config["gradient_accumulation_steps"] == 1
    assert config["train_batch_size"] == 4 * 1 * 2 and config["gradient_clipping"] == 0.5  # micro x accum x world
    assert distributed.zero_stage(accelerator) == 3
    unclipped = _plugin_state({"gradient_clipping": "auto", "zero_optimization": {"stage": 2}})
    distributed.configure_deepspeed(unclipped, micro_batch_size=1, max_grad_norm=None)
    assert unclipped.state.deepspeed_plugin.deepspeed_config["gradient_clipping"] == 0.0  # null: no clipping


def test_configure_deepspeed_names_what_disagrees_with_the_recipe():
    accelerator = _plugin_state(
        {"train_micro_batch_size_per_gpu": 8, "gradient_clipping": 1.0, "zero_optimization": {"stage": 2}}
    )
    with pytest.raises(ValueError, match='set these to "auto"') as info:
        distributed.configure_deepspeed(accelerator, micro_batch_size=4, max_grad_norm=1.0)
    assert "train_micro_batch_size_per_gpu" in str(info.value) and "gradient_clipping" not in str(info.value)


def test_without_deepspeed_nothing_is_configured_and_no_stage():
    accelerator = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=None))
    distributed.configure_deepspeed(accelerator, micro_batch_size=4, max_grad_norm=1.0)  # a no-op, no error
    assert distributed.zero_stage(accelerator) is None


def test_single_process_loading_suspends_zero3_loading_and_restores_it():
    from transformers.integrations import HfDeepSpeedConfig, is_deepspeed_zero3_enabled

    keep = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})  # noqa: F841
    assert is_deepspeed_zero3_enabled()
    try:
        with distributed.single_process_loading():
            assert not is_deepspeed_zero3_enabled()  # a model loaded here is whole, not partitioned
        assert is_deepspeed_zero3_enabled()
    finally:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()


def _rank(rank: int, port: int, out: str) -> None:
    """One process of a gloo world of 2, as a launcher would start it."""
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
        | {"MASTER_PORT": str(port), "LOCAL_WORLD_SIZE": "2"}
    )
    os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU/gloo path, also on a machine with a GPU (CUDA starts lazily)
    import torch

    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    accelerator = distributed.make_accelerator()
    model = torch.nn.Linear(3, 2)
    frozen = torch.nn.Linear(2, 2)
    prepared = accelerator.prepare(model)
    frozen = distributed.prepare_frozen(accelerator, frozen)
    summed = accelerator.reduce(torch.tensor([float(rank + 1)]), reduction="sum").item()
    gathered = accelerator.gather(torch.tensor([rank])).tolist()
    with distributed.gathered_weights(accelerator, prepared):  # a no-op without ZeRO-3
        weight_sum = float(prepared.module.weight.sum())
    state = distributed.full_state_dict(accelerator, prepared)
    record = {
        "summary": distributed.launch_summary(accelerator, prepared),
        "ddp_wrapped": type(prepared).__name__ == "DistributedDataParallel",
        "summed": summed,
        "gathered": gathered,
        "weight_sum": weight_sum,
        "state_keys": sorted(state),
        "frozen_trainable": any(p.requires_grad for p in frozen.parameters()),
        "frozen_training": frozen.training,
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(record))
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_a_gloo_world_of_two(tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank, args=(port, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for record in ranks:
        # A real world of 2 in DDP on the CPU: wrapped model, reductions over both ranks.
        assert record["summary"] == {
            "world_size": 2,
            "distributed_type": "MULTI_CPU",
            "zero_stage": None,
            "parameters": 8,
            "parameters_local": 8,
        }
        assert record["ddp_wrapped"]
        assert record["summed"] == 3.0 and record["gathered"] == [0, 1]
        assert record["state_keys"] == ["bias", "weight"]  # the unwrapped module's names, no `module.` prefix
        assert not record["frozen_trainable"] and not record["frozen_training"]
    assert ranks[0]["weight_sum"] == ranks[1]["weight_sum"]  # DDP broadcast rank 0's weights
