"""Launched by test_zero3.py under `accelerate launch --config_file recipes/launch/zero3.yaml --num_processes 2`.

Prepares embedded:tiny for training the way rlhf's own loops do (rlhf.distributed), then writes what this rank holds
to OUT_DIR/rank<N>.json: world size, distribution type, the DeepSpeed accelerator, and the embedding weight's local
size, full size and local shard; plus checksums of the weights file and of the weight gathered back from all ranks.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(out_dir: Path) -> None:
    from rlhf.distributed import make_accelerator, prepare_environment, shutdown

    prepare_environment()  # as `rlhf run` does, before DeepSpeed is imported
    import deepspeed
    import torch
    from deepspeed.accelerator import get_accelerator
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from rlhf.models.loading import resolve_model_path

    accelerator = make_accelerator()
    path = Path(resolve_model_path("embedded:tiny"))
    # Under the zero3 launch config the model is partitioned while it loads (zero3_init_flag), so the reference
    # checksum comes from the weights file itself.
    full_sum = float(load_file(path / "model.safetensors")["model.embed_tokens.weight"].double().sum())
    model = AutoModelForCausalLM.from_pretrained(path)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = torch.utils.data.DataLoader(list(range(8)), batch_size=2)
    engine, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    weight = engine.module.get_input_embeddings().weight
    record = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "distributed_type": accelerator.distributed_type.value,
        "zero_stage": engine.zero_optimization_stage(),
        "ds_accelerator_env": os.environ.get("DS_ACCELERATOR"),
        "ds_accelerator": get_accelerator().device_name(),
        "local_numel": weight.numel(),
        "full_numel": weight.ds_numel,
        "shard_numel": weight.ds_tensor.numel(),
        "sum_before": full_sum,
    }
    with deepspeed.zero.GatheredParameters([weight]):
        record["gathered_numel"] = weight.numel()
        record["sum_gathered"] = float(weight.detach().double().sum())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rank{record['rank']}.json").write_text(json.dumps(record))
    shutdown()  # as `rlhf run` ends a launch: a barrier, then the process group destroyed before exit


if __name__ == "__main__":
    main(Path(sys.argv[1]))
