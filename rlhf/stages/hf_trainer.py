"""What the Trainer-based stages (sft, reward, dpo) share: training arguments, datasets, and saving final/."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rlhf.config import DataConfig, StageBase
from rlhf.data.formats import DataError, load_records
from rlhf.distributed import cuda_available, trainer_arguments
from rlhf.tracking import interactive

logger = logging.getLogger("rlhf")


def load_dataset(data: DataConfig, shape: str, which: str = "train"):
    """Loads and checks the train or eval split of a stage's data (rows of `shape`: 'demonstrations', 'preferences'
    or 'prompts') as a `datasets.Dataset` of normalised rows."""
    records = load_rows(data, shape, which)
    if records is None:
        return None
    from datasets import Dataset

    return Dataset.from_list(records)


def load_rows(data: DataConfig, shape: str, which: str = "train") -> list[dict[str, Any]] | None:
    """`load_dataset`'s rows as a plain list (None without that split): for the stages that need no `datasets`.

    Reading a local file this way never imports `datasets` (with pyarrow and pandas, about 86 MB of resident memory
    that the ppo loop would carry for nothing); a hub dataset still goes through it.
    """
    from rlhf.config import is_data_file
    from rlhf.data.formats import classify

    source = data.train if which == "train" else data.eval
    limit = data.max_train_rows if which == "train" else data.max_eval_rows
    if source is None:
        return None
    if is_data_file(source):
        records = load_records(source, shape, max_rows=limit, margin_from_scores=data.margin_from_scores)
    else:
        from datasets import load_dataset as hub_load

        split = data.split if which == "train" else data.eval_split
        rows = hub_load(source, split=split)
        if limit is not None:
            rows = rows.select(range(min(limit, len(rows))))
        records = [
            classify(shape, dict(row), f"{source}[{split}]", i + 1, margin_from_scores=data.margin_from_scores)[0]
            for i, row in enumerate(rows)
        ]
    keys = {frozenset(r) - {"margin"} for r in records}
    if len(keys) > 1:
        raise DataError(
            source,
            None,
            None,
            "rows mix formats (" + "; ".join(sorted(", ".join(sorted(k)) for k in keys)) + "): use one format per file",
        )
    if shape == "preferences" and any("margin" in r for r in records) and not all("margin" in r for r in records):
        raise DataError(source, None, "margin", "some rows have a margin and some do not: give every row one")
    logger.info("%s %s data: %d rows from %s", shape, which, len(records), source)
    return records


NEVER = 10**12  # a step interval no run reaches


def mixed_precision(stage: StageBase) -> str:
    """The stage's `training.mixed_precision` resolved for the device the Trainer will use ("bf16" or "no")."""
    from rlhf.precision import resolve_mixed_precision

    device = "cuda" if cuda_available() else "cpu"
    return resolve_mixed_precision(stage.training.mixed_precision, device, getattr(stage, "stage", ""))


def training_arguments(stage: StageBase, checkpoints_dir: Path, has_eval: bool) -> dict[str, Any]:
    """Keyword arguments shared by SFTConfig and RewardConfig, derived from the recipe's training block."""
    t = stage.training
    eval_strategy = ("steps" if t.eval_steps else "epoch") if has_eval else "no"
    early_stop = has_eval and t.early_stopping_patience is not None
    args: dict[str, Any] = dict(
        output_dir=str(checkpoints_dir),
        seed=stage.seed,
        data_seed=stage.seed,
        learning_rate=t.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # transformers 5 reads a float below 1 as a ratio of the total steps
        lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm if t.max_grad_norm is not None else 0.0,
        logging_steps=t.logging_steps,
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps,
        # Early stopping needs the best checkpoint, so it implies saving at every evaluation. Otherwise a checkpoint
        # every save_steps and one at the end (the "steps" strategy always saves the last step; null save_steps
        # leaves only that one). rlhf.stages.hf_checkpoints marks checkpoints complete and prunes them, so the
        # Trainer's own rotation (which could delete the last complete one before the new one is marked) is off.
        save_strategy=eval_strategy if early_stop else "steps",
        save_steps=t.eval_steps if early_stop else (t.save_steps or NEVER),
        save_total_limit=None,
        # Off: the Trainer would otherwise replace a NaN/inf loss by the running mean and hide it from the guard.
        logging_nan_inf_filter=False,
        load_best_model_at_end=early_stop,
        metric_for_best_model="eval_loss" if early_stop else None,
        greater_is_better=False if early_stop else None,
        gradient_checkpointing=t.gradient_checkpointing,
        # bf16 weights, or float32 weights under bf16 autocast (training.mixed_precision; the Trainer's own switch).
        bf16=stage.model.dtype == "bfloat16" or mixed_precision(stage) == "bf16",
        fp16=stage.model.dtype == "float16",
        report_to="none",  # rlhf.tracking forwards the logs to the trackers the recipe names
        disable_tqdm=not interactive(),
        dataloader_num_workers=0,
        remove_unused_columns=True,
    )
    args.update(trainer_arguments())
    return args


def quiet_printer(trainer) -> None:
    """Drops the Trainer's raw dict printer: rlhf.tracking already prints one plain line per log."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def callbacks(stage: StageBase, tracker) -> list:
    """The tracker callback, plus early stopping when the recipe asks for it."""
    from transformers import EarlyStoppingCallback

    from rlhf.tracking import trainer_callback

    found = [trainer_callback(tracker, stage.stage)]
    if stage.training.early_stopping_patience is not None and stage.data.eval is not None:
        found.append(EarlyStoppingCallback(early_stopping_patience=stage.training.early_stopping_patience))
    return found


def save_final(trainer, tokenizer, final_dir: Path) -> None:
    """Saves a model directory that `from_pretrained` loads (full weights or a PEFT adapter), with its tokenizer.

    Every rank must call this. Under ZeRO-3 each rank holds only a shard of every weight: the weights are gathered
    layer by layer onto the main process first, so final/ never holds only a DeepSpeed shard.
    """
    accelerator = trainer.accelerator
    state_dict = None
    engine = trainer.deepspeed if trainer.is_deepspeed_enabled else None
    if engine is not None and engine.zero_optimization_partition_weights():
        # The engine's own gather, rather than accelerator.get_state_dict, works whatever the launch config says
        # about stage3_gather_16bit_weights_on_model_save; it returns the weights in their training dtype on rank 0.
        state_dict = engine._zero3_consolidated_16bit_state_dict()
    if accelerator.is_main_process:
        final_dir.mkdir(parents=True, exist_ok=True)
        unwrapped = accelerator.unwrap_model(trainer.model)
        unwrapped.save_pretrained(final_dir, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(final_dir)
    accelerator.wait_for_everyone()


def launch_summary(trainer) -> dict[str, Any]:
    """How the run was distributed, for the manifest: world size, distribution type, ZeRO stage, parameter counts.

    `parameters_local` counts the parameter elements the main process stores (under ZeRO-3 its partition, about
    `parameters / world_size`), which records that the weights really were partitioned.
    """
    accelerator = trainer.accelerator
    engine = trainer.deepspeed if trainer.is_deepspeed_enabled else None
    module = engine.module if engine is not None else accelerator.unwrap_model(trainer.model_wrapped)
    params = list(module.parameters())
    return {
        "world_size": accelerator.num_processes,
        "distributed_type": accelerator.distributed_type.value,
        "zero_stage": engine.zero_optimization_stage() if engine is not None else None,
        "parameters": sum(getattr(p, "ds_numel", p.numel()) for p in params),
        "parameters_local": sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params),
    }


def finish_preference_stage(
    stage: StageBase,
    trainer,
    tracker,
    results: dict[str, Any],
    by_category: dict[str, dict[str, float]],
    parent: Path | None,
    started: float,
    by_rule: dict[str, dict[str, float]] | None = None,
) -> None:
    """The common end of the stages trained on preference pairs (reward, dpo).

    Adds the held-out accuracy per category (and per `category/rule`, where the held-out rows name a rule: e.g.
    `content/wrong_order`, which shows what a category's mean hides) to `results` and the log, logs
    every numeric result under `final/` in the tracker, closes it, writes the manifest on the main process, and holds
    every rank until then, so that a later stage finds a complete artifact on every rank (and no rank waits in that
    stage's collectives meanwhile).
    """
    from rlhf.artifacts import data_hashes, write_manifest
    from rlhf.distributed import is_main_process

    if by_category:
        results["accuracy_by_category"] = by_category
    if by_rule:
        results["accuracy_by_rule"] = by_rule
    for category, found in by_category.items():
        rules = ", ".join(
            f"{label.partition('/')[2]} {rule['accuracy']:.2f}"
            for label, rule in (by_rule or {}).items()
            if label.startswith(f"{category}/")
        )
        logger.info(
            "%s: held-out category %s: accuracy %.3f over %d pairs, mean margin %.3f%s",
            stage.stage,
            category,
            found["accuracy"],
            found["n"],
            found["margin"],
            f" (by rule: {rules})" if rules else "",
        )
    per_label = {
        f"final/eval_{kind}/{label}/{key}": value
        for kind, found_by in (("category", by_category), ("rule", by_rule or {}))
        for label, found in found_by.items()
        for key, value in found.items()
    }
    tracker.log(
        {f"final/{k}": v for k, v in results.items() if isinstance(v, int | float)} | per_label,
        step=trainer.state.global_step,
    )
    tracker.close()
    if is_main_process():
        write_manifest(
            Path(stage.output_dir),
            stage,
            data=data_hashes(stage.data.train, stage.data.eval),
            parents={"model": parent},
            results=results,
            started=started,
        )
    trainer.accelerator.wait_for_everyone()
