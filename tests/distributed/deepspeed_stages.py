"""Launched by test_pipeline_launch.py under a DeepSpeed launch config: two stages' accelerators in one process.

The first accelerator stands for an earlier stage (the reward Trainer) and fills the DeepSpeed config with a
micro-batch of 8; the second, made afterwards in the same process as the ppo stage makes it, must see the launch's
config as written ("auto") and train with its own micro-batch of 4. Writes what it saw to OUT_DIR/rank<N>.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(out_dir: Path) -> None:
    from rlhf.distributed import configure_deepspeed, make_accelerator, prepare_environment, shutdown

    prepare_environment()
    import torch

    first = make_accelerator()
    configure_deepspeed(first, micro_batch_size=8, max_grad_norm=1.0)
    first_config = dict(first.state.deepspeed_plugin.deepspeed_config)

    second = make_accelerator()
    second_config = dict(second.state.deepspeed_plugin.deepspeed_config)
    error = None
    try:
        configure_deepspeed(second, micro_batch_size=4, max_grad_norm=None)
    except ValueError as err:
        error = str(err)
    record = {
        "first_micro": first_config["train_micro_batch_size_per_gpu"],
        "second_before": second_config["train_micro_batch_size_per_gpu"],
        "second_clipping_before": second_config["gradient_clipping"],
        "error": error,
    }
    if error is None:
        model = torch.nn.Linear(4, 1)
        engine, _ = second.prepare(model, torch.optim.AdamW(model.parameters(), lr=1e-3))
        record["engine_micro"] = engine.train_micro_batch_size_per_gpu()
        record["engine_clipping"] = engine.gradient_clipping()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(record))
    shutdown()  # as `rlhf run` ends a launch


if __name__ == "__main__":
    main(Path(sys.argv[1]))
