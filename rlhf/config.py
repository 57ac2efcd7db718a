"""The recipe schema: one pydantic model per block, defaults and documentation live only here.

This module imports neither torch nor transformers, so that validating a recipe takes milliseconds.
Every field carries a description; `rlhf validate` and the README walkthrough are built on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

DATA_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
ARM_NAME = r"^[a-z][a-z0-9_]*$"  # a named arm: a directory name and a `stage:NAME` reference
STAGE_REF_PREFIX = "stage:"
BASE_REF_SUFFIX = ".base"  # `stage:NAME.base` in a pipeline's compare models: the model stage NAME starts from
EMBEDDED_PREFIX = "embedded:"
FILE_REF_SEPARATOR = "/"  # `stage:NAME/FILE` in a data field: a file stage NAME wrote into its final/


def reference_parts(ref: str) -> tuple[str, str]:
    """(section, file) of a `stage:NAME` reference (file '') or of a `stage:NAME/FILE` data reference."""
    section, _, file = ref.removeprefix(STAGE_REF_PREFIX).partition(FILE_REF_SEPARATOR)
    return section, file


class Block(BaseModel):
    """Base of every recipe block: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def is_data_file(value: str) -> bool:
    """Whether a data reference names a local file (by suffix) rather than a hub dataset."""
    return value.lower().endswith(DATA_FILE_SUFFIXES)


def _resolve_data_path(value: str | None, info: ValidationInfo) -> str | None:
    """Makes a relative data file path absolute against the recipe's directory (hub names and `stage:NAME/FILE`
    references to a file an earlier pipeline stage writes pass through)."""
    if value is None or not is_data_file(value) or value.startswith(STAGE_REF_PREFIX):
        return value
    base = (info.context or {}).get("base_dir")
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return str(path.resolve()) if path.is_absolute() or base is not None else value


def _resolve_embedded_corpus(value: str, info: ValidationInfo) -> str:
    """`embedded:NAME@DIR`: makes DIR absolute against the recipe's directory, as data paths are, and checks that it
    is a directory (an absent one is an error naming the key, before anything runs)."""
    if not value.startswith(EMBEDDED_PREFIX) or "@" not in value:
        return value
    reference, _, directory = value.partition("@")
    path = Path(directory).expanduser()
    base = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if not path.is_dir():
        raise ValueError(f"{value}: the embedded model's corpus directory {path} does not exist")
    return f"{reference}@{path.resolve()}"


class LoraConfig(Block):
    """Low-rank adapters (PEFT) instead of full fine-tuning."""

    r: int = Field(8, gt=0, description="Rank of the low-rank update matrices.")
    alpha: int = Field(16, gt=0, description="LoRA scaling numerator (the update is scaled by alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear' for every linear layer but the output head."
    )


class ModelConfig(Block):
    """Which model a stage starts from and how it is loaded."""

    name_or_path: str = Field(
        "embedded:tiny",
        description=(
            "A hub id, a local model directory, 'embedded:tiny' (a small Llama-style model and tokenizer built "
            "locally from the brand-voice corpus; 'embedded:base' is pretrained on it; 'embedded:NAME@DIR' builds "
            "from the training files in DIR instead, relative to the recipe), or 'stage:NAME' (the final/ output of "
            "an earlier pipeline stage)."
        ),
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) when loading from the hub.")
    trust_remote_code: bool = Field(
        False, description="Allow model code from the hub to run. Off by default: only enable for sources you trust."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Parameter dtype for training and inference (float32 on CPU)."
    )
    chat_template: str | None = Field(
        None,
        description=(
            "A Jinja chat template that replaces the tokenizer's (for base models that have none, e.g. Pythia); it is "
            "saved with the stage's tokenizer, so later stages built on it use it too. Null: the tokenizer's own."
        ),
    )
    lora: LoraConfig | None = Field(None, description="Train LoRA adapters instead of all weights; null disables.")

    _resolve = field_validator("name_or_path")(_resolve_embedded_corpus)


class DataConfig(Block):
    """Where a stage's data comes from. Files: .jsonl, .json, .csv, .parquet; anything else is a hub dataset."""

    train: str = Field(
        description="Training data: a file path (relative to the recipe's directory), a hub dataset name, or in a "
        "pipeline 'stage:NAME/FILE', a file an earlier stage wrote (e.g. 'stage:pairs/sft_train.jsonl')."
    )
    eval: str | None = Field(
        None,
        description="Held-out data (same format and forms as train): eval loss, preference accuracy, or eval prompts.",
    )
    split: str = Field("train", description="Split to read when `train` is a hub dataset.")
    eval_split: str = Field(
        "test", description="Split to read when `eval` is a hub dataset (e.g. 'validation' where there is no 'test')."
    )
    max_length: int = Field(256, gt=8, description="Maximum tokens per example (prompt + response).")
    max_prompt_length: int = Field(
        128, gt=0, description="Maximum prompt tokens (ppo); longer prompts are left-truncated."
    )
    max_train_rows: int | None = Field(None, gt=0, description="Use only the first N training rows (quick runs).")
    max_eval_rows: int | None = Field(None, gt=0, description="Use only the first N held-out rows (quick runs).")
    margin_from_scores: float | None = Field(
        None,
        gt=0,
        description=(
            "Reward stage, rows with `score_chosen` and `score_rejected` (UltraFeedback): each pair's margin in the "
            "Bradley-Terry loss is this factor times (score_chosen - score_rejected); null ignores the scores."
        ),
    )

    _resolve = field_validator("train", "eval")(_resolve_data_path)

    @model_validator(mode="after")
    def _prompt_fits(self) -> DataConfig:
        if self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"max_prompt_length ({self.max_prompt_length}) must be smaller than max_length ({self.max_length})"
            )
        return self


class TrainingConfig(Block):
    """Optimisation settings shared by every stage."""

    learning_rate: float = Field(1e-5, gt=0, description="Peak learning rate.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (ppo: over the prompts).")
    max_steps: int | None = Field(
        None, gt=0, description="Stop after this many optimiser steps (ppo: rollout batches); overrides epochs."
    )
    batch_size: int = Field(
        8, gt=0, description="Examples per device per step (ppo: prompts per device per rollout batch)."
    )
    gradient_accumulation_steps: int = Field(
        1,
        gt=0,
        description="Micro-batches accumulated per optimiser step (ppo: the losses stay token means over the whole "
        "minibatch, whatever the split).",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Fraction of steps with a linear learning-rate warm-up.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warm-up."
    )
    max_grad_norm: float | None = Field(
        1.0,
        gt=0,
        description="Gradient clipping norm; null disables clipping. ppo clips the joint norm of policy and value "
        "gradients and logs each group's norm apart (grad_norm/policy, grad_norm/value).",
    )
    logging_steps: int = Field(10, gt=0, description="Log metrics every N steps.")
    eval_steps: int | None = Field(
        None, gt=0, description="Evaluate on the held-out split every N steps (sft, reward); null: once per epoch."
    )
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop when eval loss has not improved for N evaluations (sft, reward)."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    mixed_precision: Literal["no", "bf16", "auto"] = Field(
        "no",
        description=(
            "bf16: float32 weights, gradients and optimiser state, matrix products in bf16 under autocast (ppo: "
            "sampling and scoring too); auto: bf16 where the training device has native bf16 matrix instructions "
            "(CUDA from Ampere, CPUs with AVX512-BF16 or AMX), checked at run time, otherwise no. Needs "
            "model.dtype float32 (bfloat16 weights are already bf16); under a DeepSpeed launch use model.dtype "
            "bfloat16 instead (DeepSpeed's bf16 keeps float32 master weights; bf16 here is refused, auto is off)."
        ),
    )
    save_steps: int | None = Field(
        500,
        gt=0,
        description=(
            "Write a resumable checkpoint (weights, optimiser, scheduler, RNG states) every N optimiser steps, and "
            "always one at the end; null: only the one at the end. With early stopping, checkpoints follow the "
            "evaluations instead (sft, reward)."
        ),
    )
    save_total_limit: int | None = Field(
        2, gt=0, description="Keep only the newest K complete checkpoints (older ones are deleted); null keeps all."
    )

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _unquoted_no(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted `no` as false: `mixed_precision: no` (and the override mixed_precision=no) must
        # mean "no", not fail. Only false is taken; true names no setting and is refused with the valid choices.
        return "no" if value is False else value


class TrackingConfig(Block):
    """Experiment tracking. metrics.jsonl is always written; these add trackers."""

    report_to: list[Literal["none", "tensorboard", "wandb"]] = Field(
        default_factory=lambda: ["none"], description="Trackers: none, tensorboard, wandb (WANDB_MODE is honoured)."
    )
    project: str = Field("rlhf", description="Project name for wandb.")
    run_name: str | None = Field(None, description="Run name for the trackers; default: the output directory name.")

    @field_validator("report_to", mode="before")
    @classmethod
    def _accept_single(cls, value: object) -> object:
        # `report_to: wandb` reads naturally in YAML and on the command line; accept it as a one-item list.
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _none_alone(self) -> TrackingConfig:
        if "none" in self.report_to and len(self.report_to) > 1:
            raise ValueError("report_to: 'none' cannot be combined with other trackers")
        return self


class StageBase(Block):
    """Settings every stage recipe has."""

    seed: int = Field(42, description="Seed for python, numpy, torch and data shuffling.")
    output_dir: str = Field(description="Where the stage writes final/, recipe.yaml, metrics.jsonl, manifest.json.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The model the stage starts from.")
    data: DataConfig = Field(description="The stage's data.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Optimisation settings.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Experiment trackers.")
    resume: bool = Field(
        True,
        description=(
            "Continue from the latest complete checkpoint in output_dir/checkpoints when one exists (refused if the "
            "recipe or data changed); false deletes the old checkpoints and starts over."
        ),
    )

    @model_validator(mode="after")
    def _one_precision(self) -> StageBase:
        if self.training.mixed_precision != "no" and self.model.dtype != "float32":
            raise ValueError(
                f"training.mixed_precision: {self.training.mixed_precision} needs model.dtype float32 (got "
                f"{self.model.dtype}: the weights already compute in it); set one of the two"
            )
        return self


class SFTStage(StageBase):
    """Supervised fine-tuning on demonstrations (TRL SFTTrainer); loss on assistant/completion tokens only."""

    stage: Literal["sft"] = Field(description="The stage this recipe runs.")
    packing: bool = Field(False, description="Pack several short examples into one sequence of max_length tokens.")

    @model_validator(mode="after")
    def _scores_unused(self) -> SFTStage:
        return _no_score_margin(self)


def _no_score_margin(stage: StageBase) -> StageBase:
    """Refuses `data.margin_from_scores` outside the reward stage, where nothing would read it."""
    if stage.data.margin_from_scores is not None:
        raise ValueError(f"data.margin_from_scores applies to the reward stage's pairs only, not to {stage.stage}")
    return stage


class ImplicitRewardConfig(Block):
    """An implicit reward model: a causal LM whose reward is beta * log(pi(y|x) / pi_ref(y|x)) against the starting
    model, which stays its frozen reference. Trained with the Bradley-Terry loss on that score, which is DPO's loss
    (TRL DPOTrainer); see `rlhf.rewards.implicit`."""

    beta: float = Field(0.1, gt=0, description="The scale of the log-ratio (dpo's beta).")
    sft_weight: float = Field(
        0.0,
        ge=0,
        description=(
            "Weight of a negative log-likelihood term on the chosen replies (dpo's sft_weight): keeps the chosen "
            "replies likely, so the log-ratio does not pay for lowering both replies; 0 disables."
        ),
    )


class RewardStage(StageBase):
    """Reward-model training on preference pairs with the pairwise Bradley-Terry loss.

    Without `implicit`, a one-logit sequence classifier (TRL RewardTrainer); with it, an implicit reward model.
    """

    stage: Literal["reward"] = Field(description="The stage this recipe runs.")
    implicit: ImplicitRewardConfig | None = Field(
        None,
        description=(
            "Train an implicit reward model (a causal LM scoring beta * log(pi / pi_ref) against the starting model) "
            "instead of a one-logit classifier on the last token; null: the classifier."
        ),
    )
    center_rewards_coefficient: float | None = Field(
        None,
        ge=0,
        description="Weight of the auxiliary loss pushing mean rewards towards zero; null disables (classifier only).",
    )

    @model_validator(mode="after")
    def _implicit_settings(self) -> RewardStage:
        if self.implicit is None:
            return self
        if self.center_rewards_coefficient is not None:
            raise ValueError("center_rewards_coefficient is not used by an implicit reward model: remove it")
        if self.data.margin_from_scores is not None:
            raise ValueError("data.margin_from_scores is not used by an implicit reward model (no margin): remove it")
        return self


DPO_LOSS_TYPES = (
    "sigmoid",
    "ipo",
    "hinge",
    "robust",
    "exo_pair",
    "nca_pair",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
)


class DPOStage(StageBase):
    """Direct preference optimisation (Rafailov et al. 2023) of the sft model on preference pairs (TRL DPOTrainer).

    The reference is the starting model, frozen: a copy of it, or with LoRA the trained model with its adapter off.
    """

    stage: Literal["dpo"] = Field(description="The stage this recipe runs.")
    beta: float = Field(
        0.1,
        gt=0,
        description=(
            "Strength of the pull towards the reference: the implicit reward is beta * log(pi / pi_ref); higher "
            "stays closer (for 'ipo', the regulariser tau)."
        ),
    )
    loss_type: Literal[DPO_LOSS_TYPES] = Field(
        "sigmoid",
        description=(
            "TRL's preference loss: 'sigmoid' (DPO), 'ipo' (Azar et al. 2023), 'hinge' (SLiC), 'robust', 'exo_pair', "
            "'nca_pair', 'bco_pair', 'sppo_hard', 'aot', 'aot_unpaired', 'apo_zero', 'apo_down', 'discopop', "
            "'sigmoid_norm'."
        ),
    )
    sft_weight: float = Field(
        0.0,
        ge=0,
        description=(
            "Weight of a negative log-likelihood term on the chosen replies added to the preference loss (RPO, Pang "
            "et al. 2024; TRL's 'sft' loss). Without it DPO can lower the chosen replies' likelihood along with the "
            "rejected ones and drift far from the reference; 0 disables."
        ),
    )

    @model_validator(mode="after")
    def _scores_unused(self) -> DPOStage:
        return _no_score_margin(self)


class RolloutConfig(Block):
    """How the policy samples responses during ppo."""

    max_new_tokens: int = Field(48, gt=0, description="Maximum response length in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Nucleus sampling mass; must stay 1.0 (off): ppo's ratio and KL penalty and compare's KL are "
        "taken against the full temperature-scaled distribution, which a filtered sample does not come from.",
    )
    top_k: int = Field(
        0,
        ge=0,
        description="Sample among the k most likely tokens; must stay 0 (off), for the same reason as top_p.",
    )
    missing_eos_penalty: float | None = Field(
        None, ge=0, description="Subtracted from the score of responses that never emit EOS; null disables."
    )
    decoder: Literal["auto", "hf", "static"] = Field(
        "auto",
        description="Decoding path: 'auto' runs Llama, Mistral, Qwen2/3, Gemma 1/2/3 and Phi-3 models (LoRA "
        "included) through a lean KV-cache decoder over their own weights and everything else through its own "
        "forward (the choice is logged); 'hf' always uses the model's own forward (same tokens, slower); 'static' "
        "the lean maths over a fixed-size cache with each step replayed from a CUDA graph on GPUs (eager on CPU; "
        "not yet run on a GPU end to end, see docs/performance.md).",
    )

    @model_validator(mode="after")
    def _no_filters(self) -> RolloutConfig:
        # Refused rather than half-supported: log-probs of the filtered distribution need the same filter applied
        # to the training, reference and compare forwards, where a token can fall outside the other model's filter
        # set (log-prob -inf, a NaN KL). TRL likewise forces top_k=0, top_p=1 for PPO.
        for key, off in (("top_k", 0), ("top_p", 1.0)):
            if getattr(self, key) != off:
                raise ValueError(
                    f"rollout.{key}={getattr(self, key)}: sampling filters are not supported (the PPO ratio, the KL "
                    f"penalty and compare's KL use the unfiltered distribution); set rollout.{key} to {off:g} or "
                    "remove it, and use rollout.temperature to sharpen sampling"
                )
        return self


class PPORolloutConfig(RolloutConfig):
    """How the policy samples responses during ppo, and how many per prompt."""

    samples_per_prompt: int = Field(
        1,
        gt=0,
        description="Responses sampled per prompt (k). grpo and rloo compare each response with the others to the "
        "same prompt and need k >= 2; a prompt's k responses stay together on one process and in one minibatch.",
    )
    recompute_logprobs: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Recompute the old policy's log-probs with the training forward (one extra policy pass per step) "
        "instead of taking the sampler's: 'auto' does so when the two numerics differ (half-precision weights or an "
        "Accelerate mixed-precision launch, where the KV-cache sampler and the full-sequence trainer round "
        "differently), 'always' also in fp32 (the gap it logs is then float noise). Whenever it runs, the "
        "sampler-trainer gap is logged as rollout/logprob_gap_mean and rollout/logprob_gap_max (nats per token).",
    )


class KLConfig(Block):
    """The per-token KL to the frozen reference policy (Ziegler et al. 2019), in the reward or as a loss term."""

    mode: Literal["reward", "loss"] = Field(
        "reward",
        description="'reward': a per-token penalty in the reward (Ziegler et al. 2019; with grpo and rloo the summed "
        "penalty is taken from each response's reward); 'loss': a term `coef * KL` added to the policy loss "
        "(Shao et al. 2024, GRPO), the reward being the score alone.",
    )
    coef: float = Field(0.05, ge=0, description="Initial (or fixed) KL coefficient beta.")
    adaptive: bool = Field(False, description="Adapt beta towards `target` (Ziegler et al. 2019, sec. 2.2).")
    target: float = Field(6.0, gt=0, description="Target KL per sequence for the adaptive controller.")
    horizon: int = Field(10000, gt=0, description="Adaptive controller horizon in episodes.")
    estimator: Literal["k1", "k3"] = Field(
        "k1",
        description="Per-token KL estimator (Schulman 2020, 'Approximating KL Divergence'): 'k1' log(pi/pi_ref), "
        "unbiased and sometimes negative; 'k3' pi_ref/pi - log(pi_ref/pi) - 1, unbiased and non-negative.",
    )
    alarm: float | None = Field(
        50.0,
        gt=0,
        description="Report loudly (an error line and `kl_alarm` in metrics) when a step's mean KL per "
        "sequence exceeds this: the policy is drifting far from the reference. Null disables.",
    )


class RewardSourceConfig(Block):
    """One term of the ppo reward: a learned reward model or a programmatic function."""

    name: str = Field(description="Name used when logging this term (reward/<name>).")
    model: str | None = Field(
        None, description="A sequence-classification model directory, or 'stage:reward' in a pipeline."
    )
    function: str | None = Field(
        None,
        description=(
            "A programmatic reward: a module in reward_models/ ('brand_voice'), or 'package.module:function' "
            "for an explicitly named module. The function takes prompts and responses and returns floats."
        ),
    )
    spec: str | None = Field(
        None,
        description="A voice spec YAML (relative to the recipe), compiled into a programmatic reward: its weighted "
        "rule score in [0, 1] (rlhf.voice), with a per-rule breakdown in compare.",
    )
    weight: float = Field(1.0, description="Weight of this term in the total reward.")

    @field_validator("spec")
    @classmethod
    def _resolve_spec(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get("base_dir")
        if value is None or base is None or Path(value).expanduser().is_absolute():
            return value
        return str((Path(base) / value).resolve())

    @model_validator(mode="after")
    def _exactly_one(self) -> RewardSourceConfig:
        if sum(source is not None for source in (self.model, self.function, self.spec)) != 1:
            raise ValueError(f"reward source '{self.name}' needs exactly one of `model`, `function` or `spec`")
        return self


class AdvantageConfig(Block):
    """How the advantage of each response token is estimated (rlhf.ppo.advantages)."""

    estimator: Literal["gae", "grpo", "rloo", "reinforce_pp"] = Field(
        "gae",
        description="'gae': a learned value function and GAE (PPO); 'grpo': the response's reward normalised by its "
        "prompt group's mean and std (Shao et al. 2024); 'rloo': the reward minus the mean of the prompt's other "
        "responses (Ahmadian et al. 2024); 'reinforce_pp': per-token returns whitened over the batch (Hu 2025). "
        "Only gae builds or loads a critic; grpo and rloo need rollout.samples_per_prompt >= 2.",
    )


class ValueConfig(Block):
    """The value function used for GAE advantages (estimator 'gae' only)."""

    mode: Literal["critic", "head"] = Field(
        "critic",
        description=(
            "'critic': a separate model initialised from `init` (more memory, independent features); "
            "'head': a scalar head on the policy's trunk (one forward pass serves both, less memory)."
        ),
    )
    init: str | None = Field(
        None, description="Critic initialisation (critic mode); default: the first learned reward source's model."
    )
    coef: float = Field(
        0.1,
        ge=0,
        description="Value-loss weight in the loss that is backpropagated. Head mode: it balances the value loss "
        "against the policy loss in the shared trunk. Critic mode: it scales the critic's loss alone (the critic "
        "shares no weights with the policy), which under AdamW matters mainly through the joint gradient clip "
        "(training.max_grad_norm over policy and critic together) and AdamW's epsilon.",
    )
    learning_rate: float | None = Field(
        None, gt=0, description="Critic learning rate; default: training.learning_rate."
    )
    cliprange: float | None = Field(0.2, gt=0, description="Value clipping range around the old values; null disables.")


class UpdateConfig(Block):
    """The PPO update on each batch of rollouts (Schulman et al. 2017)."""

    epochs: int = Field(4, gt=0, description="Passes over each rollout batch.")
    num_minibatches: int = Field(1, gt=0, description="Minibatches per pass (each one optimiser step).")
    cliprange: float = Field(0.2, gt=0, description="Policy ratio clipping epsilon.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount factor (gae and reinforce_pp).")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda (gae only).")
    whiten_advantages: bool = Field(
        True,
        description="Normalise GAE advantages to zero mean, unit variance per batch (gae only: grpo and rloo "
        "normalise per prompt group, reinforce_pp always whitens its returns over the batch).",
    )
    reward_normalization: bool = Field(
        False, description="Scale scores by a running standard deviation before the KL penalty is added."
    )
    reward_clip: float | None = Field(None, gt=0, description="Clip (normalised) scores to [-c, c]; null disables.")


class PPOStage(StageBase):
    """PPO against a reward built from learned and programmatic sources, with a KL penalty to the reference."""

    stage: Literal["ppo"] = Field(description="The stage this recipe runs.")
    rewards: list[RewardSourceConfig] = Field(min_length=1, description="Reward terms, summed with their weights.")
    rollout: PPORolloutConfig = Field(default_factory=PPORolloutConfig, description="Sampling settings.")
    kl: KLConfig = Field(default_factory=KLConfig, description="KL penalty settings.")
    advantage: AdvantageConfig = Field(default_factory=AdvantageConfig, description="Advantage estimation.")
    value: ValueConfig = Field(default_factory=ValueConfig, description="Value function settings (gae only).")
    update: UpdateConfig = Field(default_factory=UpdateConfig, description="PPO update settings.")
    log_samples_every: int = Field(10, gt=0, description="Log a small table of prompts and responses every N steps.")
    frontier_every: int | None = Field(
        None,
        gt=0,
        description="Every N steps, and before the first, the policy answers the held-out prompts (data.eval, capped "
        "by data.max_eval_rows) as the closing evaluation does (the rollout's sampling, the recipe's seed: the same "
        "replies at every point while the policy is unchanged), and metrics.jsonl records the over-optimisation "
        "frontier (Gao et al. 2022): frontier/kl (mean KL per reply to the reference), frontier/sqrt_kl, and each "
        "reward term's mean as frontier/proxy/<name> (learned terms), frontier/gold/<name> (weight-0 terms) or "
        "frontier/reward/<name> (other terms); the closing evaluation adds the last point. compare draws them. "
        "Null: off.",
    )

    @model_validator(mode="after")
    def _scores_unused(self) -> PPOStage:
        return _no_score_margin(self)

    @model_validator(mode="after")
    def _frontier_needs_eval(self) -> PPOStage:
        if self.frontier_every is not None and self.data.eval is None:
            raise ValueError("frontier_every evaluates on the held-out prompts: set data.eval, or frontier_every=null")
        return self

    @model_validator(mode="after")
    def _batch_splits(self) -> PPOStage:
        # Minibatches take whole prompts (all k responses of each), so a prompt's group is never split.
        prompts, remainder = divmod(self.training.batch_size, self.update.num_minibatches)
        responses = prompts * self.rollout.samples_per_prompt
        if remainder or responses % self.training.gradient_accumulation_steps:
            raise ValueError(
                f"training.batch_size ({self.training.batch_size} prompts x rollout.samples_per_prompt "
                f"{self.rollout.samples_per_prompt}) must split evenly into update.num_minibatches "
                f"({self.update.num_minibatches}) of whole prompts x training.gradient_accumulation_steps "
                f"({self.training.gradient_accumulation_steps})"
            )
        return self

    @model_validator(mode="after")
    def _estimator_settings(self) -> PPOStage:
        estimator = self.advantage.estimator
        if estimator in ("grpo", "rloo") and self.rollout.samples_per_prompt < 2:
            raise ValueError(
                f"advantage.estimator '{estimator}' compares the responses to one prompt: set "
                "rollout.samples_per_prompt to 2 or more"
            )
        # Settings the chosen estimator never reads are errors rather than silently ignored.
        unused = {"gae": [], "reinforce_pp": ["value", "update.lam", "update.whiten_advantages"]}.get(
            estimator, ["value", "update.gamma", "update.lam", "update.whiten_advantages"]
        )
        for key in unused:
            block, _, field = key.rpartition(".")
            if (field in self.update.model_fields_set) if block else (key in self.model_fields_set):
                raise ValueError(f"{key} is not used by advantage.estimator '{estimator}': remove it")
        return self


COMPARE_METRICS = ("kl", "bon_kl", "length", "eos", "distinct_1", "distinct_2", "repetition")
"""Per-response measures compare reports besides the proxy and the judges (names a score cannot take)."""


class CompareModelConfig(Block):
    """One model in a comparison: a label and where to load it from."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Label in the report's tables and plots (letters, digits, '_', '-', '.').",
    )
    path: str = Field(
        description=(
            "A model reference as in model.name_or_path: a directory (full weights or a PEFT adapter, which is "
            "merged), a hub id, 'embedded:tiny', or 'stage:NAME' (a stage's final/ in a pipeline). In a pipeline, "
            "'stage:NAME.base' is the model stage NAME starts from (its model.name_or_path), e.g. 'stage:sft.base' "
            "for the base model; the pipeline replaces it by that value, which the compare stage's recipe.yaml shows."
        )
    )


class PromptsConfig(Block):
    """The held-out prompts every model answers (the ppo prompt format: `prompt` or `messages`)."""

    path: str = Field(
        description="A prompts file (relative to the recipe's directory), a hub dataset name, or in a pipeline "
        "'stage:NAME/FILE', a file an earlier stage wrote (e.g. 'stage:pairs/eval_prompts.jsonl')."
    )
    split: str = Field("test", description="Split to read when `path` is a hub dataset.")
    max_prompts: int | None = Field(None, gt=0, description="Use only the first N prompts (quick runs).")
    max_prompt_length: int = Field(128, gt=0, description="Maximum prompt tokens; longer prompts are left-truncated.")

    _resolve = field_validator("path")(_resolve_data_path)


class BestOfNConfig(Block):
    """Best-of-n arms: one model's replies re-ranked by the proxy, an arm that trains nothing (Gao et al. 2022)."""

    model: str | None = Field(
        None,
        description="Name of the compared model (one of `models`) that samples the candidates; default: the "
        "reference (the sft model in the shipped recipes).",
    )
    n: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [4, 16],
        min_length=1,
        description="Candidates per reply, one arm per value, named <model>-bo<n>. The proxy picks the best of n; "
        "every arm draws from the same max(n) candidates per prompt and sample, and the report gives its measured "
        "KL to the sampling model beside the analytic log n - (n-1)/n.",
    )


DEFAULT_RUBRIC = (
    "You are judging two replies to the same customer message. The better reply answers what the customer asked, "
    "is correct and specific about what will happen next, is polite and concise, and adds nothing irrelevant. "
    "Ignore which reply comes first and do not prefer a reply for being longer.\n\n"
    "Customer message:\n{prompt}\n\nReply A:\n{first}\n\nReply B:\n{second}\n\n"
    "Which reply is better? Answer with one letter, A or B."
)
"""The model judge's default rubric (brand-voice support replies); {prompt}, {first} and {second} are filled in."""


class HumanRatingsConfig(Block):
    """Filled human-evaluation sheets and the key that unblinds them (`rlhf.compare.human`)."""

    key: str = Field(
        description="key.json written with the sheet by a compare run with `human_export` (relative to the recipe): "
        "which model wrote each reply, and the replies themselves."
    )
    sheets: list[str] = Field(
        min_length=1,
        description="Filled sheets, one per rater (CSV with columns item and choice, optionally rater; the full "
        "sheet.csv or the form's download). Relative to the recipe.",
    )

    @field_validator("key")
    @classmethod
    def _resolve_key(cls, value: str, info: ValidationInfo) -> str:
        return _resolve_relative(value, info)

    @field_validator("sheets")
    @classmethod
    def _resolve_sheets(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return [_resolve_relative(v, info) for v in value]


def _resolve_relative(value: str, info: ValidationInfo) -> str:
    base = (info.context or {}).get("base_dir")
    if base is None or Path(value).expanduser().is_absolute():
        return value
    return str((Path(base) / value).resolve())


class PairwiseJudgeConfig(Block):
    """A judge that compares two replies to the same prompt (`rlhf.compare.pairwise`): a local causal LM with a
    rubric, a plug-in function, or human raters. Model and plug-in judges see every pair in both orders; a reply
    wins only when both orders prefer it."""

    name: str = Field(description="Name of the judge in the report and results.json.")
    model: str | None = Field(
        None,
        description="A causal LM as judge: a directory saved with save_pretrained, a hub id or 'embedded:NAME'. "
        "Its preference is log P('A') - log P('B') as the next token after the rubric.",
    )
    function: str | None = Field(
        None,
        description="A plug-in judge 'package.module:function' (e.g. your own API client): called with (prompts, "
        "first replies, second replies), returns one number per pair, > 0 for the first reply, < 0 for the second, "
        "0 for no preference.",
    )
    human: HumanRatingsConfig | None = Field(None, description="Human raters' filled sheets.")
    rubric: str = Field(
        DEFAULT_RUBRIC,
        description="The model judge's prompt, with the fields {prompt}, {first} and {second}; it should ask for "
        "the letter A or B (model judges only).",
    )
    trust_remote_code: bool = Field(
        False,
        description="Allow the model judge's code from the hub to run (model judges only). Off by default: only "
        "enable for sources you trust.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> PairwiseJudgeConfig:
        if sum(kind is not None for kind in (self.model, self.function, self.human)) != 1:
            raise ValueError(f"pairwise judge '{self.name}' needs exactly one of `model`, `function` or `human`")
        if "rubric" in self.model_fields_set:
            if self.model is None:
                raise ValueError(f"pairwise judge '{self.name}': `rubric` is for model judges only")
            import string

            fields = {f for _, f, _, _ in string.Formatter().parse(self.rubric) if f is not None}
            if fields != {"prompt", "first", "second"}:
                raise ValueError(
                    f"pairwise judge '{self.name}': the rubric must use exactly the fields {{prompt}}, {{first}} "
                    f"and {{second}} (found {', '.join(sorted(fields)) or 'none'}; write literal braces as {{{{ }}}})"
                )
        return self


class HumanExportConfig(Block):
    """A blinded pairwise sheet for human raters, written by compare into <output_dir>/human/ (`rlhf.compare.human`)."""

    items: int = Field(40, gt=0, description="Prompts per compared pair, chosen at random (all when fewer).")
    repeats: int = Field(
        5, ge=0, description="Items shown a second time, sides swapped, to measure each rater's self-consistency."
    )
    models: list[str] | None = Field(
        None, description="Arms rated against the reference; default: every arm but the reference."
    )


class CompareStage(Block):
    """Evaluation: models answer the same held-out prompts with the same decoding and seed, scored by the training
    reward (proxy) and independent judges, with KL to a reference, bootstrap intervals, alarms and a report."""

    stage: Literal["compare"] = Field(description="The stage this recipe runs.")
    seed: int = Field(42, description="Seed for sampling (the same for every model) and for the bootstrap.")
    output_dir: str = Field(description="Where report.md, report.html, results.json and plots/ are written.")
    models: list[CompareModelConfig] = Field(min_length=1, description="The models to compare, in report order.")
    reference: str | None = Field(
        None,
        description=(
            "Name of the model the others are measured against: KL is computed to it, and differences and alarms "
            "are relative to it (usually the sft model). Default: the first model."
        ),
    )
    prompts: PromptsConfig = Field(description="The held-out prompts.")
    proxy: list[RewardSourceConfig] = Field(
        default_factory=list,
        description=(
            "The reward the policy was trained on (same form as ppo.rewards); its weighted sum is the 'proxy' score. "
            "Empty: no proxy score and no proxy-vs-judge alarm."
        ),
    )
    judges: list[RewardSourceConfig] = Field(
        min_length=1,
        description=(
            "Independent judges, not used in training: reward-model directories, reward_models/ functions or "
            "voice specs."
        ),
    )
    rollout: RolloutConfig = Field(
        default_factory=RolloutConfig, description="Decoding settings, the same for every model."
    )
    samples_per_prompt: int = Field(1, gt=0, description="Responses sampled per prompt and model.")
    batch_size: int = Field(32, gt=0, description="Prompts per generation batch (and responses per scoring batch).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Dtype the models are loaded in.")
    bootstrap_resamples: int = Field(
        1000, ge=100, description="Bootstrap resamples of the prompts for every confidence interval."
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Coverage of the bootstrap confidence intervals.")
    report_samples: int = Field(8, ge=0, description="Prompts shown side by side (every model's reply) in the report.")
    best_of_n: BestOfNConfig | None = Field(
        None, description="Add best-of-n arms (needs a proxy, which picks the replies); null: none."
    )
    pairwise_judges: list[PairwiseJudgeConfig] = Field(
        default_factory=list,
        description="Judges that compare two replies (model, plug-in or human); reported as win rates, with their "
        "position consistency and agreement with the other judges.",
    )
    human_export: HumanExportConfig | None = Field(
        None, description="Also write a blinded sheet for human raters into <output_dir>/human/; null: none."
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Experiment trackers.")

    @model_validator(mode="after")
    def _best_of_n(self) -> CompareStage:
        if self.best_of_n is None:
            return self
        if not self.proxy:
            raise ValueError("best_of_n picks replies by the proxy score: add a `proxy`")
        names = [m.name for m in self.models]
        base = self.best_of_n.model
        if base is not None and base not in names:
            raise ValueError(f"best_of_n.model '{base}' is not one of the models ({', '.join(names)})")
        if len(set(self.best_of_n.n)) != len(self.best_of_n.n):
            raise ValueError(f"best_of_n.n lists a value twice: {self.best_of_n.n}")
        for arm in self.best_of_n_arms():
            if arm in names:
                raise ValueError(f"best-of-n arm '{arm}' has the name of a compared model: rename the model")
        return self

    def best_of_n_model(self) -> str | None:
        """The model best-of-n samples from (None without best-of-n arms)."""
        if self.best_of_n is None:
            return None
        return self.best_of_n.model or self.reference_name()

    def best_of_n_arms(self) -> dict[str, int]:
        """{arm name: n} of the best-of-n arms, named <model>-bo<n> (empty without best-of-n)."""
        base = self.best_of_n_model()
        return {} if base is None else {f"{base}-bo{n}": n for n in self.best_of_n.n}

    def arm_names(self) -> list[str]:
        """Every row of the report: the models in order, the sampling model followed by its best-of-n arms."""
        base, arms = self.best_of_n_model(), []
        for model in self.models:
            arms += [model.name, *(self.best_of_n_arms() if model.name == base else [])]
        return arms

    @model_validator(mode="after")
    def _consistent(self) -> CompareStage:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        if self.reference is not None and self.reference not in names:
            raise ValueError(f"reference '{self.reference}' is not one of the models ({', '.join(names)})")
        scores = [s.name for s in self.judges] + [s.name for s in self.proxy] + [s.name for s in self.pairwise_judges]
        reserved = {"proxy", "total", *COMPARE_METRICS}
        for name in scores:
            if scores.count(name) > 1 or name in reserved:
                raise ValueError(f"score name '{name}' is used twice or is reserved ({', '.join(sorted(reserved))})")
        # A weight-0 term is logged during training but never optimised, so it may serve as a judge.
        trained_on = {s.model or s.function or s.spec for s in self.proxy if s.weight != 0}
        for judge in self.judges:
            if (judge.model or judge.function or judge.spec) in trained_on:
                raise ValueError(f"judge '{judge.name}' is also a proxy (training) reward: a judge must be independent")
            if judge.weight != RewardSourceConfig.model_fields["weight"].default:
                raise ValueError(f"judge '{judge.name}': judges are reported one by one, a weight has no meaning")
        exported = self.human_export.models if self.human_export is not None else None
        for name in exported or []:
            if name not in self.arm_names() or name == self.reference_name():
                raise ValueError(f"human_export.models: '{name}' is not an arm other than the reference")
        if self.rollout.missing_eos_penalty is not None:
            raise ValueError(
                "rollout.missing_eos_penalty shapes the training reward only; compare reports the EOS "
                "rate on its own: remove it"
            )
        return self

    def reference_name(self) -> str:
        """The reference model's name (the first model when `reference` is not set)."""
        return self.reference or self.models[0].name


class LogColumns(Block):
    """The column names of a support log (`rlhf voice pairs`, the pairs stage)."""

    message: str = Field("message", description="The customer's message.")
    reply: str = Field("reply", description="The agent's reply.")
    thread: str = Field("thread_id", description="The conversation (thread) id; optional unless split_by: thread.")
    customer: str = Field("customer_id", description="The customer id; optional unless split_by: customer.")
    timestamp: str = Field("timestamp", description="ISO 8601 time of the reply; optional unless by_time.")
    agent: str = Field("agent_id", description="The agent id (the summary's on-voice share per agent); optional.")


class PairsOptions(Block):
    """How support logs are split, scrubbed and paired (`rlhf voice pairs`, the pairs stage)."""

    split_by: Literal["customer", "thread", "row"] = Field(
        "customer", description="Keep each customer's (or thread's) rows in one split; 'row': rows split alone."
    )
    by_time: bool = Field(False, description="Hold out the newest groups (needs the timestamp column).")
    eval_share: float = Field(0.1, gt=0, lt=1, description="Share of the rows for the sft and preference eval files.")
    held_out_share: float = Field(
        0.1, gt=0, lt=1, description="Share of the rows held out as eval prompts (never in any other file)."
    )
    scrub: bool = Field(
        True,
        description="Replace PII (emails, phone and card numbers, street addresses, order ids) by consistent "
        "placeholders; false only for logs already scrubbed.",
    )
    min_similarity: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Word overlap (Jaccard) for pairing an off-voice log reply with an on-voice reply to a similar "
        "message.",
    )
    seed: int = Field(0, description="Seed of the split and of the rewrites' choices.")

    @model_validator(mode="after")
    def _shares_leave_training_rows(self) -> PairsOptions:
        if self.eval_share + self.held_out_share >= 1:
            raise ValueError(
                f"eval_share + held_out_share ({self.eval_share} + {self.held_out_share}) must leave rows to train on"
            )
        return self


class PairsStage(PairsOptions):
    """`rlhf voice pairs` as a pipeline stage: a company's support logs and voice spec -> the data files the later
    stages read, written into final/ (sft_train.jsonl, sft_eval.jsonl, prefs_train.jsonl, prefs_eval.jsonl,
    ppo_prompts.jsonl, eval_prompts.jsonl, summary.json). A later stage names one as 'stage:pairs/FILE'."""

    stage: Literal["pairs"] = Field(description="The stage this recipe runs.")
    output_dir: str = Field(description="Where the stage writes final/ (the data files), recipe.yaml, manifest.json.")
    spec: str = Field(description="The voice spec YAML (relative to the recipe) that labels the replies.")
    logs: str = Field(
        description="The support logs (relative to the recipe): .jsonl, .json, .csv or .parquet, one customer "
        "message and agent reply per row."
    )
    columns: LogColumns = Field(default_factory=LogColumns, description="The logs' column names.")
    resume: bool = Field(
        True,
        description="Skip the stage when its output already holds a finished run of this recipe, logs and spec; "
        "false writes the files again.",
    )

    _resolve_logs = field_validator("logs")(_resolve_data_path)

    @field_validator("spec")
    @classmethod
    def _resolve_spec(cls, value: str, info: ValidationInfo) -> str:
        return _resolve_relative(value, info)

    @field_validator("logs")
    @classmethod
    def _logs_file(cls, value: str) -> str:
        if not is_data_file(value):
            raise ValueError(f"'{value}' is not a logs file: use .jsonl, .json, .csv or .parquet")
        return value


class PipelineBase(Block):
    """Stages chained into one run directory: <run_dir>/<stage> for each stage section (sft, reward, ppo, compare...).

    Stage sections take the same keys as stage recipes, without `stage` and `output_dir` (the pipeline sets them).
    `seed` and `tracking` are written once here and apply to every stage that does not set its own. The sections
    themselves are added from the stage registry (`rlhf.stages.registry.PipelineRecipe`), one per declared stage,
    with `arms`: named training sections beyond those (e.g. a second ppo-family run, `grpo: {stage: ppo, ...}`), each
    in <run_dir>/<name>. A section's *name* is its output folder and its `stage:NAME`; its *stage* is what it runs.
    """

    run_dir: str = Field(description="Directory that holds one sub-directory per stage.")
    seed: int = Field(42, description="Seed for every stage that does not set its own.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Trackers for every stage.")
    resume: bool = Field(
        True,
        description=(
            "`resume` for every training stage that does not set its own: true continues each stage from its latest "
            "complete checkpoint and skips a stage whose finished output matches its recipe; false starts over."
        ),
    )
    stages: list[str] | None = Field(
        None, description="Run only these stages (in pipeline order); default: every stage present."
    )
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description=(
            "A study: dotted key -> the values `rlhf sweep` runs (e.g. `{seed: [1, 2, 3], ppo.kl.coef: [0.05, 0.1]}`); "
            "every combination of values runs into <run_dir>/<key=value,...>, and stages that no swept key reaches "
            "are trained once and shared. `rlhf run` refuses a recipe with a sweep (pass `sweep={}` for one run)."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_stage_sections(cls, data: object) -> object:
        # Each section inherits the pipeline's seed and tracking and gets its fixed output directory, so shared
        # settings are written once and the run layout is the same for every pipeline.
        if not isinstance(data, dict) or "run_dir" not in data:
            return data
        from rlhf.stages.registry import STAGES

        data = dict(data)

        def fill(name: str, section: dict, stage: str) -> dict:
            section = {"stage": stage, **section, "output_dir": str(Path(str(data["run_dir"])) / name)}
            section.setdefault("seed", data.get("seed", cls.model_fields["seed"].default))
            if "tracking" in data and "tracking" not in section and "tracking" in STAGES[stage].schema.model_fields:
                section["tracking"] = data["tracking"]
            if "resume" in data and STAGES[stage].trains:
                section.setdefault("resume", data["resume"])
            return section

        for name in STAGES:
            section = data.get(name)
            if not isinstance(section, dict):
                continue
            if "output_dir" in section or "stage" in section:
                key = "output_dir" if "output_dir" in section else "stage"
                raise ValueError(f"{name}.{key} is set by the pipeline and cannot appear in a stage section")
            data[name] = fill(name, section, name)
        if isinstance(data.get("arms"), dict):
            arms = {}
            for name, section in data["arms"].items():
                if isinstance(section, dict):
                    training = [n for n, s in STAGES.items() if s.trains]
                    if section.get("stage") not in training:
                        raise ValueError(
                            f"arms.{name} needs `stage:` naming what it runs, one of {', '.join(training)}"
                        )
                    if name in STAGES or name == "arms":
                        raise ValueError(
                            f"arms.{name}: '{name}' is a section of the pipeline; give the arm its own name"
                        )
                    if "output_dir" in section:
                        raise ValueError(
                            f"arms.{name}.output_dir is set by the pipeline and cannot appear in a stage section"
                        )
                    section = fill(str(name), section, section["stage"])
                arms[name] = section
            data["arms"] = arms
        return data

    @model_validator(mode="after")
    def _references_point_backwards(self) -> PipelineBase:
        from rlhf.stages.registry import STAGES, declared_references

        present = self.present_stages()
        if not present:
            raise ValueError("a pipeline needs at least one of the sections: " + ", ".join(STAGES))
        for name in self.stages or []:
            if name not in present:
                raise ValueError(f"stages lists '{name}' but the pipeline has no '{name}' section")
        for position, name in enumerate(present):
            for reference, field, ref in declared_references(self.section(name)):
                if not ref.startswith(STAGE_REF_PREFIX):
                    continue
                target, file = reference_parts(ref) if reference.file else (ref.removeprefix(STAGE_REF_PREFIX), "")
                if reference.base and target.endswith(BASE_REF_SUFFIX):
                    target = target.removesuffix(BASE_REF_SUFFIX)  # `stage:NAME.base`: the model NAME starts from
                if target not in present[:position]:
                    raise ValueError(
                        f"{name}.{field} refers to '{ref}', but '{target}' is not an earlier stage of this pipeline "
                        f"(earlier stages: {', '.join(present[:position]) or 'none'})"
                    )
                if reference.file:
                    written = STAGES[self.section_stage(target)].writes
                    if file not in written:
                        raise ValueError(
                            f"{name}.{field} refers to '{ref}', but a data reference names a file that stage writes: "
                            + (
                                ", ".join(f"'{STAGE_REF_PREFIX}{target}{FILE_REF_SEPARATOR}{w}'" for w in written)
                                if written
                                else f"'{target}' writes no data files"
                            )
                        )
                elif reference.stage is not None and self.section_stage(target) != reference.stage:
                    raise ValueError(
                        f"{name}.{field} refers to '{ref}', but a reward source must be a reward model: "
                        f"use '{STAGE_REF_PREFIX}{reference.stage}'"
                    )
        return self

    @model_validator(mode="after")
    def _resolve_base_references(self) -> PipelineBase:
        # `stage:sft.base` names whatever the sft section starts from, so the compared base follows an override of
        # sft.model.name_or_path. It is replaced here, once `_references_point_backwards` has checked that it names
        # an earlier stage, before anything reads a section that accepts it; the stage writes the replaced value
        # into its recipe.yaml and report.
        from rlhf.stages.registry import STAGES, replace_references

        def base(ref: str) -> str:
            if ref.startswith(STAGE_REF_PREFIX) and ref.endswith(BASE_REF_SUFFIX):
                return self.section(ref.removeprefix(STAGE_REF_PREFIX).removesuffix(BASE_REF_SUFFIX)).model.name_or_path
            return ref

        for name in self.present_stages():
            section = self.section(name)
            resolved = replace_references(section, base)
            for reference in STAGES[section.stage].references:
                head = reference.field.split(".")[0]
                if reference.base and getattr(resolved, head) != getattr(section, head):
                    setattr(section, head, getattr(resolved, head))
        return self

    def sections(self) -> dict[str, StageBase | CompareStage]:
        """Every section present, by name, in run order: the training stages, the named arms, then compare."""
        from rlhf.stages.registry import STAGES

        fixed = {name: getattr(self, name) for name in STAGES if getattr(self, name) is not None}
        training = {name: section for name, section in fixed.items() if STAGES[name].trains}
        closing = {name: section for name, section in fixed.items() if not STAGES[name].trains}
        return {**training, **self.arms, **closing}

    def present_stages(self) -> list[str]:
        """The names of the sections this pipeline has, in run order."""
        return list(self.sections())

    def section(self, name: str) -> StageBase | CompareStage:
        """The stage recipe of a section (a stage's own section or a named arm)."""
        return self.sections()[name]

    def section_name(self, stage: StageBase | CompareStage) -> str:
        """The section a stage recipe of this pipeline comes from (its output folder's name)."""
        return Path(stage.output_dir).name

    def section_stage(self, name: str) -> str:
        """The stage a section runs (`ppo` for a grpo arm): what a `stage:NAME` artifact's manifest records."""
        return self.section(name).stage

    def selected_stages(self) -> list[StageBase | CompareStage]:
        """The stage recipes this pipeline runs, in order."""
        return [section for name, section in self.sections().items() if self.stages is None or name in self.stages]

    def stage_output(self, name: str) -> Path:
        """The output directory of a stage of this pipeline."""
        return Path(self.run_dir) / name

    def reference_path(self, ref: str) -> Path:
        """What a `stage:NAME` reference stands for in this run: NAME's final/ directory (`stage:NAME/FILE`: the
        file in it)."""
        section, file = reference_parts(ref)
        final = self.stage_output(section) / "final"
        return final / file if file else final
