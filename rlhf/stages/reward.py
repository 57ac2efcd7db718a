"""The reward stage: a one-logit sequence classifier trained on preference pairs with TRL's RewardTrainer.

The loss is the pairwise Bradley-Terry loss -log sigmoid(r_chosen - r_rejected - margin), the margin coming from an
optional per-pair `margin` column. Held-out preference accuracy is measured after training on the saved final/
model, so the number describes exactly what later stages load. When held-out rows carry a `category` column (the
shipped brand-voice set: voice, content, paraphrase, other_intent, length_matched), accuracy, mean margin and pair
count are also reported per category: in the log, in metrics.jsonl's final record and in the manifest's results
under `accuracy_by_category`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rlhf.artifacts import FINAL, check_parent, write_recipe
from rlhf.config import DataConfig, RewardStage, is_data_file
from rlhf.data.formats import read_rows
from rlhf.distributed import is_main_process, single_process_loading
from rlhf.models.loading import load_reward_model, load_tokenizer, peft_config, resolve_model_path, torch_dtype
from rlhf.stages.hf_checkpoints import check_finite_loss, checkpoint_callbacks, resume_point
from rlhf.stages.hf_trainer import (
    callbacks,
    finish_preference_stage,
    launch_summary,
    load_dataset,
    quiet_printer,
    save_final,
    training_arguments,
)
from rlhf.tracking import Tracker

logger = logging.getLogger("rlhf")


def run(cfg: RewardStage) -> Path:
    """Trains a reward model and returns the output directory.

    Leaves `final/` (a classifier: loads with AutoModelForSequenceClassification; with `implicit`: a causal LM with
    `implicit_reward.json` naming its reference, see `rlhf.rewards.implicit`), `recipe.yaml`, `metrics.jsonl`
    and `manifest.json` (with held-out accuracy and mean margin, per category when the held-out rows have one) in
    `cfg.output_dir`. Every loader of reward models (ppo, compare, `rlhf plan`) reads either kind.
    """
    if cfg.implicit is not None:
        return _run_implicit(cfg)
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig, RewardTrainer

    from rlhf.rewards.scoring import accuracy_by_category, preference_scores, summarize_preferences

    started = time.time()
    output_dir = Path(cfg.output_dir)
    set_seed(cfg.seed)

    # Set up.
    train = load_dataset(cfg.data, "preferences", "train")
    evaluation = load_dataset(cfg.data, "preferences", "eval")
    model_path = resolve_model_path(cfg.model.name_or_path)
    parent = check_parent(model_path)
    start = resume_point(cfg, {"model": parent})
    tokenizer = load_tokenizer(cfg.model, model_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path,
        num_labels=1,
        revision=cfg.model.revision,
        dtype=torch_dtype(cfg.model),
        trust_remote_code=cfg.model.trust_remote_code,
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    if is_main_process():
        write_recipe(cfg, output_dir)
    tracker = Tracker(
        cfg.tracking, output_dir, cfg.model_dump(mode="json"), enabled=is_main_process(), resume_step=start.step
    )

    args = RewardConfig(
        **training_arguments(cfg, output_dir / "checkpoints", has_eval=evaluation is not None),
        max_length=cfg.data.max_length,
        center_rewards_coefficient=cfg.center_rewards_coefficient,
        eos_token=tokenizer.eos_token,
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.model.lora, "SEQ_CLS") if cfg.model.lora else None,
        callbacks=callbacks(cfg, tracker) + checkpoint_callbacks(cfg, start.fingerprint),
    )
    quiet_printer(trainer)
    dropped = len(train) - len(trainer.train_dataset)
    if dropped:
        logger.warning(
            "reward: %d of %d training pairs are longer than data.max_length=%d and were dropped",
            dropped,
            len(train),
            cfg.data.max_length,
        )
    if evaluation is not None and len(evaluation) > len(trainer.eval_dataset):
        logger.warning(
            "reward: %d of %d held-out pairs are longer than data.max_length=%d: the Trainer's eval loss "
            "leaves them out (the final held-out accuracy scores them whole)",
            len(evaluation) - len(trainer.eval_dataset),
            len(evaluation),
            cfg.data.max_length,
        )

    # Train.
    train_output = trainer.train(resume_from_checkpoint=start.path)
    check_finite_loss("reward", train_output.training_loss, output_dir)

    # Save, then measure the saved model.
    save_final(trainer, tokenizer, output_dir / FINAL)
    results = {
        "train_loss": train_output.training_loss,
        "steps": trainer.state.global_step,
        "train_pairs": len(train),
        "train_pairs_dropped_too_long": dropped,
        "resumed_from_step": start.step,
        **launch_summary(trainer),
    }
    by_category: dict[str, dict[str, float]] = {}
    by_rule: dict[str, dict[str, float]] = {}
    if is_main_process() and evaluation is not None:
        with single_process_loading():  # under ZeRO-3 the other ranks are not there to partition it
            final = load_reward_model(str(output_dir / FINAL), cfg.model.dtype)
        chosen, rejected = preference_scores(final, tokenizer, list(evaluation), batch_size=cfg.training.batch_size * 2)
        held_out = summarize_preferences(chosen, rejected)
        results.update({f"eval_{k}": v for k, v in held_out.items()})
        logger.info(
            "reward: held-out preference accuracy %.3f over %d pairs, mean margin %.3f",
            held_out["accuracy"],
            held_out["pairs"],
            held_out["margin_mean"],
        )
        categories, rules = eval_labels(cfg.data, len(evaluation))
        by_category = accuracy_by_category(chosen, rejected, categories)
        by_rule = accuracy_by_category(chosen, rejected, rules)
    finish_preference_stage(cfg, trainer, tracker, results, by_category, parent, started, by_rule)
    return output_dir


def _run_implicit(cfg: RewardStage) -> Path:
    """The implicit reward model: DPO's training of the starting model against its frozen copy (a LoRA adapter
    against its base with the adapter off), then the marker that makes final/ a reward model."""
    from rlhf.rewards.implicit import write_marker
    from rlhf.stages.dpo import train

    beta = cfg.implicit.beta

    def declare(final: Path, reference: str) -> None:
        write_marker(final, beta, None if cfg.model.lora else reference)

    return train(cfg, beta, "sigmoid", cfg.implicit.sft_weight, on_saved=declare)


def eval_labels(data: DataConfig, pairs: int) -> tuple[list[str | None], list[str | None]]:
    """The `category` and the `category/rule` of each of the first `pairs` held-out rows, in file order (None where a
    row has no category, or no category and rule), read in one pass.

    The loaders keep only the columns training reads, so the labels are read beside them from the same rows: a local
    file row by row (`load_records` neither skips nor reorders rows), a hub dataset from its eval split. A rule may
    recur in several categories (a `length_matched` pair breaks a voice or content rule too), so it is counted within
    its category (e.g. `content/wrong_order`): the labels of one category partition its pairs.
    """
    if is_data_file(data.eval):
        rows = (row for _, row in read_rows(data.eval))
    else:
        from datasets import load_dataset as hub_load

        split = hub_load(data.eval, split=data.eval_split)
        rows = iter(split) if "category" in split.column_names else iter([{}] * len(split))
    categories: list[str | None] = []
    rules: list[str | None] = []
    for row in rows:
        if len(categories) == pairs:
            break
        category, rule = (row.get(key) for key in ("category", "rule"))
        category = str(category) if category not in (None, "") else None
        categories.append(category)
        rules.append(f"{category}/{rule}" if category is not None and rule not in (None, "") else None)
    return categories, rules
