"""The sft stage: supervised fine-tuning with TRL's SFTTrainer, loss on assistant/completion tokens only."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from rlhf.artifacts import FINAL, check_parent, data_hashes, write_manifest, write_recipe
from rlhf.config import SFTStage
from rlhf.distributed import is_main_process
from rlhf.models.loading import load_causal_lm, load_tokenizer, peft_config, resolve_model_path
from rlhf.stages.hf_checkpoints import check_finite_loss, checkpoint_callbacks, resume_point
from rlhf.stages.hf_trainer import (
    callbacks,
    launch_summary,
    load_dataset,
    quiet_printer,
    save_final,
    training_arguments,
)
from rlhf.tracking import Tracker

logger = logging.getLogger("rlhf")


def run(cfg: SFTStage) -> Path:
    """Runs supervised fine-tuning and returns the output directory.

    Leaves `final/` (model and tokenizer), `recipe.yaml`, `metrics.jsonl` and `manifest.json` in `cfg.output_dir`.
    """
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    started = time.time()
    output_dir = Path(cfg.output_dir)
    set_seed(cfg.seed)

    # Set up: data first (cheap, fails fast on bad rows), then the model.
    train = load_dataset(cfg.data, "demonstrations", "train")
    evaluation = load_dataset(cfg.data, "demonstrations", "eval")
    conversational = "messages" in train.column_names
    model_path = resolve_model_path(cfg.model.name_or_path)
    parent = check_parent(model_path)
    start = resume_point(cfg, {"model": parent})
    tokenizer = load_tokenizer(cfg.model, model_path)
    model = load_causal_lm(cfg.model, model_path)
    if is_main_process():
        write_recipe(cfg, output_dir)
    tracker = Tracker(
        cfg.tracking, output_dir, cfg.model_dump(mode="json"), enabled=is_main_process(), resume_step=start.step
    )

    args = SFTConfig(
        **training_arguments(cfg, output_dir / "checkpoints", has_eval=evaluation is not None),
        max_length=cfg.data.max_length,
        packing=cfg.packing,
        # messages: train on assistant turns (the chat template marks them); prompt/completion: on the completion.
        assistant_only_loss=conversational,
        completion_only_loss=None if conversational else True,
        eos_token=tokenizer.eos_token,
        dataset_num_proc=None,
        # The first evaluation runs inside train(): before it, DeepSpeed ZeRO-1/2 has no engine to evaluate with.
        eval_on_start=evaluation is not None and start.step is None,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.model.lora, "CAUSAL_LM") if cfg.model.lora else None,
        callbacks=callbacks(cfg, tracker) + checkpoint_callbacks(cfg, start.fingerprint),
    )
    quiet_printer(trainer)
    splits = (("training", train, trainer.train_dataset), ("held-out", evaluation, trainer.eval_dataset))
    for which, rows, kept in splits:
        # SFTTrainer drops rows that truncation to max_length leaves without a single trained token.
        dropped = len(rows) - len(kept) if rows is not None and kept is not None and not cfg.packing else 0
        if dropped:
            logger.warning(
                "sft: %d of %d %s rows have no response tokens left within data.max_length=%d and were dropped",
                dropped,
                len(rows),
                which,
                cfg.data.max_length,
            )

    # Train.
    train_output = trainer.train(resume_from_checkpoint=start.path)
    check_finite_loss("sft", train_output.training_loss, output_dir)
    first_eval = next((log for log in trainer.state.log_history if "eval_loss" in log), {})
    last_eval = trainer.evaluate() if evaluation is not None else {}

    # Save.
    save_final(trainer, tokenizer, output_dir / FINAL)
    results = {
        "train_loss": train_output.training_loss,
        "steps": trainer.state.global_step,
        "eval_loss_start": first_eval.get("eval_loss"),
        "eval_loss_end": last_eval.get("eval_loss"),
        "eval_perplexity_end": math.exp(last_eval["eval_loss"]) if "eval_loss" in last_eval else None,
        "train_rows": len(train),
        "resumed_from_step": start.step,
        "eval_rows": len(evaluation) if evaluation is not None else 0,
        **launch_summary(trainer),
    }
    tracker.log(
        {f"final/{k}": v for k, v in results.items() if isinstance(v, int | float)}, step=trainer.state.global_step
    )
    tracker.close()
    if is_main_process():
        write_manifest(
            output_dir,
            cfg,
            data=data_hashes(cfg.data.train, cfg.data.eval),
            parents={"model": parent},
            results=results,
            started=started,
        )
    trainer.accelerator.wait_for_everyone()  # a later stage on any rank reads the manifest the main process wrote
    logger.info(
        "sft finished: eval loss %s -> %s; final model in %s",
        results["eval_loss_start"],
        results["eval_loss_end"],
        output_dir / FINAL,
    )
    return output_dir
