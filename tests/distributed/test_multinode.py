"""Two accelerate "machines" on one host (loopback), one CPU process each, run a short sft stage together."""

from __future__ import annotations

import pytest

from .launching import SHORT_SFT, finish, free_port, launch_command, results, rlhf_run, start

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.parametrize(
    ("config", "distributed_type", "zero_stage"),
    [
        ("ddp", "MULTI_CPU", None),  # --multi_gpu from the config; rlhf adds use_cpu + gloo
        ("two_nodes", "DEEPSPEED", 3),  # the shipped multi-node example: ZeRO-3, deepspeed_multinode_launcher standard
    ],
)
def test_two_machines_on_loopback(tmp_path, config, distributed_type, zero_stage):
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / "run"
    port = free_port()
    target = rlhf_run(run_dir, "stages=[sft]", *SHORT_SFT)
    logs = [tmp_path / f"machine{rank}.log" for rank in (0, 1)]
    processes = [
        start(launch_command(config, target, num_processes=2, port=port, machines=(rank, 2)), logs[rank])
        for rank in (0, 1)
    ]
    finish(processes, logs)

    found = results(run_dir / "sft")
    assert (found["world_size"], found["distributed_type"], found["zero_stage"]) == (2, distributed_type, zero_stage)
    assert found["steps"] == 4
    assert found["eval_loss_end"] < found["eval_loss_start"]
    _, info = AutoModelForCausalLM.from_pretrained(run_dir / "sft" / "final", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
