"""The benchmark workloads: our ppo at the TRL reference's settings, sft tokens/s and reward pairs/s, and the
throughput of one policy's generation and update (`rlhf.bench.throughput`, CPU or CUDA).

Each workload runs one stage in this process through its `run(cfg)` entry, with a recipe built here and validated by
the stage's schema, inside an `Instrumentation` (every forward pass counted and timed). The timed region matches the
reference's `trainer.train()`: from the start of the first step to the log of the last one (model loading before it
and the final save after it are outside). `measure` is what `python -m rlhf.bench.worker` calls, one workload per
process, so that peak RSS and thread pools belong to that workload alone.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from rlhf.bench import flops as F
from rlhf.bench.probe import NUM_THREADS, matmul_ceiling, peak_rss_mb

# The reference's PPO_KW and N_PROMPTS (trl_ppo_baseline.py); TRL's PPOConfig defaults for the rest.
N_PROMPTS = 256
PPO_SETTINGS = dict(
    batch_size=8,
    num_minibatches=1,
    max_new_tokens=48,
    epochs=4,
    episodes=256,
    temperature=0.7,
    missing_eos_penalty=1.0,
    learning_rate=3e-6,
    kl_coef=0.05,
    cliprange=0.2,
    value_coef=0.1,
    value_cliprange=0.2,
    gamma=1.0,
    lam=0.95,
    max_grad_norm=1.0,
    lr_scheduler="linear",
    seed=42,
)
SFT_SETTINGS = dict(batch_size=16, max_length=256, learning_rate=2e-3, max_steps=30)
REWARD_SETTINGS = dict(batch_size=16, max_length=256, learning_rate=5e-4, max_steps=30)


def prompt_rows(n: int = N_PROMPTS) -> list[dict]:
    """The reference's prompts: one user turn "my order {i} is late" each, rendered with the generation prompt."""
    return [{"prompt": [{"role": "user", "content": f"my order {i} is late"}]} for i in range(n)]


def ppo_recipe(
    size: str,
    models: dict[str, Path],
    data_file: Path,
    output_dir: Path,
    *,
    value: str = "critic",
    lora: bool = False,
    episodes: int = 256,
    gradient_checkpointing: bool = False,
    precision: str = "fp32",
) -> dict:
    """A ppo recipe with the reference's settings, as a plain dict (validated by `PPOStage`).

    `precision` "bf16" trains float32 weights under bf16 autocast (`training.mixed_precision: bf16`), as the
    reference's `--mode trl-defaults` does (TRL's `bf16=True`).
    """
    s = PPO_SETTINGS
    if episodes % s["batch_size"]:
        raise ValueError(f"episodes ({episodes}) must be a multiple of the batch size ({s['batch_size']})")
    return {
        "stage": "ppo",
        "seed": s["seed"],
        "output_dir": str(output_dir),
        "resume": False,
        "model": {"name_or_path": str(models["policy"]), "dtype": "float32", "lora": {} if lora else None},
        "data": {"train": str(data_file), "max_length": 256, "max_prompt_length": 128},
        "rewards": [{"name": "reward", "model": str(models["reward"])}],
        "rollout": {
            "max_new_tokens": s["max_new_tokens"],
            "temperature": s["temperature"],
            "missing_eos_penalty": s["missing_eos_penalty"],
        },
        "kl": {"coef": s["kl_coef"]},
        "value": {"mode": value, "coef": s["value_coef"], "cliprange": s["value_cliprange"]},
        "update": {
            "epochs": s["epochs"],
            "num_minibatches": s["num_minibatches"],
            "cliprange": s["cliprange"],
            "gamma": s["gamma"],
            "lam": s["lam"],
        },
        "training": {
            "learning_rate": s["learning_rate"],
            "batch_size": s["batch_size"],
            "max_steps": episodes // s["batch_size"],
            "lr_scheduler": s["lr_scheduler"],
            "max_grad_norm": s["max_grad_norm"],
            "save_steps": None,
            "gradient_checkpointing": gradient_checkpointing,
            "mixed_precision": {"fp32": "no", "bf16": "bf16"}[precision],
        },
        "tracking": {"report_to": ["none"]},
        "log_samples_every": 10**6,  # the reference logs no samples; ours logs only the first step's
    }


def measure(workload: str, threads: int = NUM_THREADS, **options: Any) -> dict:
    """Runs one workload in this process and returns its measures (see `rlhf.bench.results.record`).

    `threads` other than the reference's 2 is for experiments only (the record says which was used).
    """
    import torch

    torch.set_num_threads(threads)
    logging.getLogger("rlhf").setLevel(logging.WARNING)
    runner = {"ppo": _ppo, "sft": _sft, "reward": _reward, "throughput": _throughput}[workload]
    with tempfile.TemporaryDirectory(prefix=f"rlhf-bench-{workload}-") as tmp:
        return runner(Path(tmp), **options)


def _ppo(
    tmp: Path,
    size: str,
    value: str = "critic",
    lora: bool = False,
    episodes: int = 256,
    models_root: str | None = None,
    profile: str | None = None,
    profile_dir: str | None = None,
    gradient_checkpointing: bool = False,
    arch: str = "llama",
    precision: str = "fp32",
) -> dict:
    import torch
    from transformers import AutoConfig

    from rlhf.bench.instrument import Instrumentation
    from rlhf.bench.models import prepare
    from rlhf.bench.profile import InProcessProfiler
    from rlhf.config import PPOStage
    from rlhf.stages import ppo

    models = prepare(size, Path(models_root) if models_root else None, arch)
    data_file = tmp / "prompts.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in prompt_rows()))
    recipe = ppo_recipe(
        size,
        models,
        data_file,
        tmp / "out",
        value=value,
        lora=lora,
        episodes=episodes,
        gradient_checkpointing=gradient_checkpointing,
        precision=precision,
    )
    cfg = PPOStage.model_validate(recipe)

    ceiling_before = matmul_ceiling()
    started = time.perf_counter()
    with Instrumentation(ppo_phases=True) as ins, InProcessProfiler(profile, profile_dir):
        ppo.run(cfg)
        ins.mark("end")
    wall_s = time.perf_counter() - started
    ceiling_after = matmul_ceiling()

    steps = [log for log in ins.logs if "time/step" in log.metrics]
    train_s = steps[-1].at - (steps[0].at - steps[0].metrics["time/step"])
    batch = cfg.training.batch_size
    episodes_done = len(steps) * batch
    phases = {name: sum(log.metrics[f"time/{name}"] for log in steps) for name in ("rollout", "score", "update")}
    phase_s = {
        "generation": phases["rollout"],
        "scoring": phases["score"],
        "update": phases["update"],
        "other": train_s - sum(phases.values()),
    }
    forwards = ins.forward_summary()
    gen_tokens = sum(g.batch * g.steps for g in ins.generations)
    valid_tokens = sum(log.metrics["response/length"] * batch for log in steps)

    policy_cfg = AutoConfig.from_pretrained(models["policy"])
    value_cfg = AutoConfig.from_pretrained(models["reward"])
    executed = ins.total_flops()
    trl_flops = F.trl_accounting(policy_cfg, value_cfg, ins.generations, cfg.update.epochs)
    ceiling = max(ceiling_before, ceiling_after)
    return {
        "settings": {
            **PPO_SETTINGS,
            "episodes": episodes,
            "size": size,
            "arch": arch,
            "value": value,
            "lora": lora,
            "gradient_checkpointing": gradient_checkpointing,
            "precision": precision,
            "threads": torch.get_num_threads(),
            "models": str(models["root"]),
            "profile": profile,
        },
        "params": _params(policy_cfg, value_cfg),
        "train_s": train_s,
        "wall_s": wall_s,
        "episodes": episodes_done,
        "episodes_per_s": episodes_done / train_s,
        "gen_tokens": gen_tokens,
        "gen_tokens_per_s": gen_tokens / train_s,
        "gen_valid_tokens": round(valid_tokens),
        "gen_only_tokens_per_s": gen_tokens / phases["rollout"],
        "phase_s": phase_s,
        "forward_s": forwards,
        "flops": executed,
        "achieved_gflops": executed / train_s / 1e9,
        "pct_of_ceiling": 100 * executed / train_s / 1e9 / ceiling,
        "flops_trl_accounting": trl_flops,
        "achieved_gflops_trl_accounting": sum(trl_flops.values()) / train_s / 1e9,
        "pct_of_ceiling_trl_accounting": 100 * sum(trl_flops.values()) / train_s / 1e9 / ceiling,
        "matmul_ceiling_gflops": {"before": ceiling_before, "after": ceiling_after},
        "padding": ins.padding_summary(),
        "peak_rss_mb": steps[-1].peak_kb / 1024,
        "peak_rss_process_mb": peak_rss_mb(),
        "memory_by_phase_mb": ins.memory,
        "last_metrics": {k: v for k, v in steps[-1].metrics.items() if not k.startswith("time/")},
    }


def _hf_stage(tmp: Path, stage: str, size: str, settings: dict, train_file: str, models_root: str | None) -> dict:
    """sft or reward (TRL Trainers): throughput from the logged steps after the first (warm-up excluded)."""
    import torch

    from rlhf.bench.instrument import Instrumentation
    from rlhf.bench.models import prepare
    from rlhf.config import RewardStage, SFTStage
    from rlhf.models.embedded import corpus_dir

    models = prepare(size, Path(models_root) if models_root else None)
    recipe = {
        "stage": stage,
        "seed": 42,
        "output_dir": str(tmp / "out"),
        "resume": False,
        "model": {"name_or_path": str(models["policy"])},
        "data": {"train": str(corpus_dir() / train_file), "max_length": settings["max_length"]},
        "training": {
            "batch_size": settings["batch_size"],
            "max_steps": settings["max_steps"],
            "learning_rate": settings["learning_rate"],
            "save_steps": None,
            "logging_steps": 1,
        },
        "tracking": {"report_to": ["none"]},
    }
    cfg = (SFTStage if stage == "sft" else RewardStage).model_validate(recipe)
    module = __import__(f"rlhf.stages.{stage}", fromlist=["run"])
    ceiling_before = matmul_ceiling()
    with Instrumentation() as ins:
        module.run(cfg)
    ceiling_after = matmul_ceiling()
    steps = [log for log in ins.logs if "loss" in log.metrics]
    final = next(log.metrics for log in ins.logs if "train_runtime" in log.metrics)
    first, last = steps[0], steps[-1]
    span_s = last.at - first.at
    update_flops = sum(p[-1] for p in ins.passes if p[1] == "update") + sum(
        h[-1] for h in ins.heads if h[1] == "update"
    )
    out = {
        "settings": {**settings, "size": size, "threads": torch.get_num_threads(), "data": train_file},
        "steps": len(steps),
        "train_s": final["train_runtime"],
        "steady_s": span_s,
        "flops": update_flops,
        "achieved_gflops": update_flops / final["train_runtime"] / 1e9,
        "pct_of_ceiling": 100 * update_flops / final["train_runtime"] / 1e9 / max(ceiling_before, ceiling_after),
        "matmul_ceiling_gflops": {"before": ceiling_before, "after": ceiling_after},
        "peak_rss_mb": last.peak_kb / 1024,
    }
    if stage == "sft":
        tokens = last.metrics["num_tokens"]
        out.update(
            tokens=tokens,
            tokens_per_s=tokens / final["train_runtime"],
            steady_tokens_per_s=(tokens - first.metrics["num_tokens"]) / span_s,
        )
    else:
        pairs = settings["batch_size"] * len(steps)
        out.update(
            pairs=pairs,
            pairs_per_s=pairs / final["train_runtime"],
            steady_pairs_per_s=settings["batch_size"] * (len(steps) - 1) / span_s,
        )
    return out


def _sft(tmp: Path, size: str, max_steps: int | None = None, models_root: str | None = None) -> dict:
    settings = {**SFT_SETTINGS, **({"max_steps": max_steps} if max_steps else {})}
    return _hf_stage(tmp, "sft", size, settings, "sft_train.jsonl", models_root)


def _reward(tmp: Path, size: str, max_steps: int | None = None, models_root: str | None = None) -> dict:
    settings = {**REWARD_SETTINGS, **({"max_steps": max_steps} if max_steps else {})}
    return _hf_stage(tmp, "reward", size, settings, "prefs_train.jsonl", models_root)


def _throughput(tmp: Path, **options: Any) -> dict:
    from rlhf.bench.throughput import measure as measure_throughput

    return measure_throughput(**options)


def _params(policy_cfg, value_cfg) -> dict:
    return {"policy_matmul": F.matmul_params(policy_cfg, True), "value_matmul": F.matmul_params(value_cfg, False)}
