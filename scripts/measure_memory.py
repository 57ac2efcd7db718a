"""Measures what a stage run adds to a process's memory on CPU: peak RSS minus the RSS after the heavy imports.

    python scripts/measure_memory.py OUT_DIR RECIPE [key=value ...]
    accelerate launch --config_file recipes/launch/zero3.yaml --num_processes 2 scripts/measure_memory.py OUT_DIR ...

Each process writes OUT_DIR/rank<N>.json with its baseline (RSS once torch, transformers, TRL (its trainers: TRL
imports them lazily), DeepSpeed and the stage modules are imported, one toy forward/backward/AdamW step has started
the runtime's thread pools, and the recipe's embedded models are built), its peak (getrusage ru_maxrss, the
kernel's high-water mark of resident memory, so no sampling can miss a short spike) and their difference, which
is what `rlhf plan` estimates. On CPU there is no separate device memory: every tensor is in the process's RSS.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
from pathlib import Path


def resident_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes() -> int:
    """High-water mark of this process's resident set size (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(out_dir: Path, argv: list[str]) -> int:
    import datasets  # noqa: F401
    import torch
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, Trainer  # noqa: F401
    from transformers.models.llama import modeling_llama  # noqa: F401
    from trl import RewardConfig, RewardTrainer, SFTConfig, SFTTrainer  # noqa: F401

    # The thread pools and kernel workspaces of the first forward/backward belong to the runtime, not to the run.
    toy = torch.nn.Linear(64, 64)
    torch.optim.AdamW(toy.parameters()).step()
    toy(torch.randn(8, 64)).sum().backward()

    from rlhf.cli import main as cli_main
    from rlhf.distributed import prepare_environment
    from rlhf.models.loading import resolve_model_path
    from rlhf.recipe import load_recipe
    from rlhf.stages.registry import PipelineRecipe

    prepare_environment()
    import deepspeed  # noqa: F401

    import rlhf.stages.reward  # noqa: F401
    import rlhf.stages.sft  # noqa: F401

    recipe = load_recipe(argv[0], argv[1:])
    stages = recipe.selected_stages() if isinstance(recipe, PipelineRecipe) else [recipe]
    for stage in stages:
        if stage.model.name_or_path.startswith("embedded:"):
            resolve_model_path(stage.model.name_or_path)
    gc.collect()
    baseline, peak_before = resident_bytes(), peak_bytes()
    code = cli_main(["run", *argv])
    rank = int(os.environ.get("RANK", "0"))
    record = {
        "rank": rank,
        "baseline_bytes": baseline,
        "peak_before_run_bytes": peak_before,
        "peak_bytes": peak_bytes(),
        "delta_bytes": peak_bytes() - baseline,
        "argv": argv,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(record, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))
