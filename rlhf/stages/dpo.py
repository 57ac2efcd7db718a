"""The dpo stage: direct preference optimisation (Rafailov et al. 2023) with TRL's DPOTrainer.

The policy starts from the sft model and learns from the reward stage's preference pairs directly, without a reward
model or sampling: the sigmoid loss -log sigmoid(beta * (log pi/pi_ref (chosen) - log pi/pi_ref (rejected))) by
default, TRL's other losses (IPO, hinge, ...) by `loss_type`. The reference is the starting model, frozen: a copy, or
with LoRA the policy with its adapter off. Per-pair `margin` columns are the reward stage's and are not read here.

After training, the saved final/ model is measured on the held-out pairs against the reference: its implicit reward
beta * log(pi/pi_ref) of chosen and rejected, preference accuracy (chosen above rejected), the mean reward margin,
and both per `category` when the held-out rows have one (as the reward stage reports them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from rlhf.artifacts import FINAL, check_parent, write_recipe
from rlhf.config import DPOStage, StageBase
from rlhf.distributed import is_main_process, single_process_loading
from rlhf.models.loading import load_causal_lm, load_tokenizer, peft_config, resolve_model_path, torch_dtype
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
from rlhf.stages.reward import eval_labels
from rlhf.tracking import Tracker

logger = logging.getLogger("rlhf")


def run(cfg: DPOStage) -> Path:
    """Runs DPO and returns the output directory.

    Leaves `final/` (a causal LM, or a PEFT adapter, with its tokenizer), `recipe.yaml`, `metrics.jsonl` and
    `manifest.json` (held-out preference accuracy and reward margins of the saved model, per category when the
    held-out rows have one) in `cfg.output_dir`.
    """
    return train(cfg, cfg.beta, cfg.loss_type, cfg.sft_weight)


def train(
    cfg: StageBase,
    beta: float,
    loss_type: str,
    sft_weight: float,
    on_saved: Callable[[Path, str], None] | None = None,
) -> Path:
    """Trains a causal LM on preference pairs against its frozen starting model; the dpo stage, and the reward stage
    with an `implicit` block (which declares the result a reward model through `on_saved`).

    Args:
        cfg: The stage recipe (model, data, training, output_dir, seed, tracking); its `stage` names the log lines.
        beta, loss_type, sft_weight: DPO's settings (see `DPOStage`).
        on_saved: Called on the main process with final/ and the starting model's path once final/ is written,
            before the held-out measurement.
    """
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    from rlhf.rewards.scoring import accuracy_by_category, summarize_preferences

    started = time.time()
    output_dir = Path(cfg.output_dir)
    set_seed(cfg.seed)

    # Set up: data first (cheap, fails fast on bad rows), then the model.
    train = _without_margin(load_dataset(cfg.data, "preferences", "train"), cfg.stage)
    evaluation = _without_margin(load_dataset(cfg.data, "preferences", "eval"), cfg.stage)
    model_path = resolve_model_path(cfg.model.name_or_path)
    parent = check_parent(model_path)
    start = resume_point(cfg, {"model": parent})
    tokenizer = load_tokenizer(cfg.model, model_path)
    model = load_causal_lm(cfg.model, model_path)
    # The reference: a frozen copy of the starting model (loaded here, so that an sft adapter merged on load is in
    # it too), or with LoRA none: TRL turns the adapter off.
    reference = None if cfg.model.lora else load_causal_lm(cfg.model, model_path)
    if is_main_process():
        write_recipe(cfg, output_dir)
    tracker = Tracker(
        cfg.tracking, output_dir, cfg.model_dump(mode="json"), enabled=is_main_process(), resume_step=start.step
    )

    args = DPOConfig(
        **training_arguments(cfg, output_dir / "checkpoints", has_eval=evaluation is not None),
        max_length=cfg.data.max_length,
        beta=beta,
        loss_type=[loss_type, "sft"] if sft_weight else [loss_type],
        loss_weights=[1.0, sft_weight] if sft_weight else None,
        dataset_num_proc=None,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=reference,
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
        # DPOTrainer drops pairs whose prompt alone fills max_length (no response token would be trained).
        dropped = len(rows) - len(kept) if rows is not None and kept is not None else 0
        if dropped:
            logger.warning(
                "%s: %d of %d %s pairs have a prompt that fills data.max_length=%d and were dropped",
                cfg.stage,
                dropped,
                len(rows),
                which,
                cfg.data.max_length,
            )

    # Train.
    train_output = trainer.train(resume_from_checkpoint=start.path)
    check_finite_loss(cfg.stage, train_output.training_loss, output_dir)
    # No evaluation before training: the policy is then its reference, so every margin is 0 and the loss log 2.
    last_eval = next((log for log in reversed(trainer.state.log_history) if "eval_loss" in log), {})
    if evaluation is not None and last_eval.get("step") != trainer.state.global_step:
        last_eval = trainer.evaluate()

    # Save, then measure the saved model against the reference on the held-out pairs.
    save_final(trainer, tokenizer, output_dir / FINAL)
    if on_saved is not None and is_main_process():
        on_saved(output_dir / FINAL, model_path)
    results = {
        "train_loss": train_output.training_loss,
        "steps": trainer.state.global_step,
        "eval_loss_end": last_eval.get("eval_loss"),
        "train_pairs": len(train),
        "resumed_from_step": start.step,
        **launch_summary(trainer),
    }
    by_category: dict[str, dict[str, float]] = {}
    by_rule: dict[str, dict[str, float]] = {}
    if is_main_process() and evaluation is not None:
        with single_process_loading():  # under ZeRO-3 the other ranks are not there to partition them
            policy, reference = _load_final(cfg, output_dir / FINAL, model_path)
        chosen, rejected = implicit_rewards(
            policy, reference, list(trainer.eval_dataset), trainer.data_collator, beta, cfg.training.batch_size
        )
        held_out = summarize_preferences(chosen, rejected)
        results.update({f"eval_{k}": v for k, v in held_out.items()})
        logger.info(
            "%s: held-out preference accuracy %.3f over %d pairs, mean reward margin %.3f (beta * log-ratio)",
            cfg.stage,
            held_out["accuracy"],
            held_out["pairs"],
            held_out["margin_mean"],
        )
        if len(trainer.eval_dataset) == len(evaluation):  # rows line up with the file's categories
            categories, rules = eval_labels(cfg.data, len(evaluation))
            by_category = accuracy_by_category(chosen, rejected, categories)
            by_rule = accuracy_by_category(chosen, rejected, rules)
    finish_preference_stage(cfg, trainer, tracker, results, by_category, parent, started, by_rule)
    return output_dir


def _without_margin(dataset, stage: str):
    """The pairs without a `margin` column: the margin is the classifier reward model's; DPO's loss has none."""
    if dataset is None or "margin" not in dataset.column_names:
        return dataset
    if stage == "dpo":
        logger.info("dpo: the data's per-pair margin column is for the reward stage; dpo does not read it")
    else:
        logger.warning(
            "%s: the data's per-pair margin column is not read: an implicit reward's loss has no margin", stage
        )
    return dataset.remove_columns("margin")


def _load_final(cfg: StageBase, final_dir: Path, model_path: str):
    """The saved policy and its reference for the held-out measurement (reference None: the adapter turned off)."""
    if cfg.model.lora is not None:
        from peft import AutoPeftModelForCausalLM

        policy = AutoPeftModelForCausalLM.from_pretrained(
            str(final_dir), dtype=torch_dtype(cfg.model), trust_remote_code=cfg.model.trust_remote_code
        )
        return policy.eval(), None
    policy = load_causal_lm(cfg.model, str(final_dir))
    return policy.eval(), load_causal_lm(cfg.model, model_path).eval()


def implicit_rewards(policy, reference, pairs: list[dict], collator, beta: float, batch_size: int):
    """DPO's implicit rewards beta * (log pi(y|x) - log pi_ref(y|x)) of each pair's chosen and rejected response.

    Args:
        policy: The trained causal LM (a PEFT model when `reference` is None).
        reference: The frozen reference, or None to use `policy` with its adapter disabled.
        pairs: Tokenized pairs as DPOTrainer prepares them (`prompt_ids`, `chosen_ids`, `rejected_ids`).
        collator: DPOTrainer's collator: chosen rows, then rejected rows, with a `completion_mask`.
        beta: The recipe's beta.
        batch_size: Pairs per forward pass.

    Returns:
        (chosen, rejected): float tensors with one reward per pair, in order.
    """
    import torch

    from rlhf.rewards.implicit import ImplicitReward

    # The same log-ratio the implicit reward model scores with (reference None: the adapter turned off).
    reward = ImplicitReward(policy, reference, beta, path="")
    chosen, rejected = [], []
    for i in range(0, len(pairs), batch_size):
        batch = collator(
            [{k: p[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for p in pairs[i : i + batch_size]]
        )
        rewards = reward.score_tokens(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        c, r = rewards.chunk(2)
        chosen.append(c)
        rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


def plan(cfg: StageBase, shape, launch, device: str = "cuda"):
    """Memory per device (`rlhf plan`): the trained policy, its frozen reference (none with LoRA: the adapter is
    turned off), and chosen and rejected sequences together (2 x batch_size) through TRL's tiled LM head. The dpo
    stage's, and the reward stage's with an `implicit` block (the same training)."""
    from rlhf.planner import (
        DTYPE_BYTES,
        HEAD_TILE_TOKENS,
        HEAD_TILE_VOCAB,
        HEAD_TILES,
        StagePlan,
        _buffers,
        _overlap,
        model_memory,
    )

    dtype, policy_shape = cfg.model.dtype, shape(cfg.model.name_or_path)
    policy = model_memory("policy", policy_shape, "lm", dtype, launch, trainable=True, lora=cfg.model.lora)
    models = [policy]
    if cfg.model.lora is None:
        models.append(model_memory("ref_policy", policy_shape, "lm", dtype, launch, trainable=False))
    tokens = 2 * cfg.training.batch_size * cfg.data.max_length
    train = {
        "activations": tokens
        * policy_shape.activation_elements(cfg.data.max_length, cfg.training.gradient_checkpointing)
        * DTYPE_BYTES[dtype],
        "lm head tiles": HEAD_TILES[device]
        * min(tokens, HEAD_TILE_TOKENS)
        * min(policy_shape.vocab_size, HEAD_TILE_VOCAB)
        * 4,
    }
    frozen = [policy_shape] if cfg.model.lora is None else []
    buffers = _buffers(launch, [(policy_shape, policy)], dtype, device, frozen=frozen)
    return StagePlan(cfg.stage, models, {"train": train}, buffers, _overlap(launch, cfg))
