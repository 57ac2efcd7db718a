"""Memory planner: per-device memory of every stage of a recipe under a launch config, before anything is allocated.

Pure arithmetic on three inputs: the model's shapes (its config.json), the recipe (batch size, lengths, LoRA, dtype,
ppo's four models) and the launch config (processes, ZeRO stage, offload). docs/memory.md writes out the formula
and compares it with measured peaks. This module imports neither torch nor transformers; only reading the config of
an `embedded:` model builds that model first (which does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rlhf.config import STAGE_REF_PREFIX, LoraConfig, PPOStage, RewardStage, SFTStage, StageBase
from rlhf.shapes import ModelShape
from rlhf.stages.registry import STAGES, PipelineRecipe, stage_of

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LORA_BYTES = 4  # peft keeps adapter weights in float32 even on a bf16/fp16 base (autocast_adapter_dtype)
ADAM_BYTES_DEEPSPEED = 12  # fp32 master copy + two fp32 AdamW moments per trainable parameter
# TRL's fused LM head (sft) scores tiles of at most 4096 tokens x 32768 vocabulary entries instead of the full logits;
# at its peak (backward) about this many float32 tiles are alive: measured 9.0-9.5 with the torch fallback used on
# CPU (docs/memory.md), about 2 with the Triton kernel on GPUs (a logits tile and its gradient; not measured here).
HEAD_TILE_TOKENS, HEAD_TILE_VOCAB = 4096, 32768
HEAD_TILES = {"cuda": 2.0, "cpu": 9.0}
# Allowance for the CUDA context, kernels' workspaces and allocator slack, added when deciding what fits a device.
CUDA_RESERVE_GIB = 1.5
# Under bf16 autocast the matrix products keep a bf16 copy of each float32 weight they used until backward (and
# autocast caches the copies of trainable weights while its context lasts, as in ppo's sampling).
AUTOCAST_BYTES = 2


class PlanError(ValueError):
    """A recipe, model or launch config the planner cannot read."""


@dataclass(frozen=True)
class LaunchSpec:
    """What the planner needs from an accelerate launch config (and its DeepSpeed JSON)."""

    name: str
    processes: int
    zero_stage: int | None = None  # None: no DeepSpeed (single process or DDP)
    offload_params: bool = False
    offload_optimizer: bool = False
    reduce_bucket: int = 0
    prefetch_bucket: int = 0

    @classmethod
    def from_file(cls, path: str | Path, processes: int | None = None) -> LaunchSpec:
        """Reads an accelerate config YAML; `processes` overrides its num_processes (like --num_processes)."""
        path = Path(path)
        try:
            cfg = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise PlanError(f"cannot read launch config {path}: {err}") from None
        kind = str(cfg.get("distributed_type", "NO"))
        count = int(processes or cfg.get("num_processes", 1))
        if kind != "DEEPSPEED":
            return cls(path.stem, count if kind != "NO" else 1)
        ds = cfg.get("deepspeed_config") or {}
        if ds.get("deepspeed_config_file"):
            zero = _read_deepspeed_json(path, ds["deepspeed_config_file"]).get("zero_optimization", {})
            offload_p = (zero.get("offload_param") or {}).get("device", "none") not in ("none", None)
            offload_o = (zero.get("offload_optimizer") or {}).get("device", "none") not in ("none", None)
            stage = int(zero.get("stage", 0))
        else:  # the inline form `accelerate config` writes
            zero = {}
            stage = int(ds.get("zero_stage", 0))
            offload_p = ds.get("offload_param_device", "none") not in ("none", None)
            offload_o = ds.get("offload_optimizer_device", "none") not in ("none", None)
        reduce_bucket = zero.get("reduce_bucket_size", 500_000_000)
        prefetch = zero.get("stage3_prefetch_bucket_size", 50_000_000)
        return cls(
            path.stem,
            count,
            stage,
            offload_p and stage == 3,
            offload_o,
            int(reduce_bucket) if reduce_bucket != "auto" else 0,
            int(prefetch) if prefetch != "auto" else 0,
        )

    def partitions(self, what: str) -> int:
        """How many ways ZeRO splits 'optimizer', 'gradients' or 'weights' (1 where they are replicated)."""
        needed = {"optimizer": 1, "gradients": 2, "weights": 3}[what]
        return self.processes if self.zero_stage is not None and self.zero_stage >= needed else 1


def _read_deepspeed_json(launch_file: Path, reference: str) -> dict:
    # accelerate resolves the path against the working directory; recipes/launch names it from the repository root.
    for candidate in (Path(reference), launch_file.parent / reference, launch_file.parents[2] / reference):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    raise PlanError(f"{launch_file}: DeepSpeed config {reference} not found")


@dataclass
class ModelMemory:
    """One model's resident state on one device, in bytes."""

    role: str
    parameters: int
    trainable: int
    weights: float
    gradients: float = 0.0
    optimizer: float = 0.0
    offloaded: float = 0.0  # in CPU memory instead (ZeRO offload), per process

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer


@dataclass
class StagePlan:
    """The estimate for one stage: resident model state, buffers, and the transient peak of its largest phase."""

    stage: str
    models: list[ModelMemory]
    phases: dict[str, dict[str, float]]  # phase -> transient terms (activations, lm head, kv cache, ...)
    buffers: dict[str, float] = field(default_factory=dict)  # communication buckets, ZeRO-3 gathered weights
    # Without DeepSpeed and without accumulation, gradients are created during backward as activations are freed
    # (the optimiser sets them to None after each step), so the peak holds the larger of the two, not their sum.
    gradients_overlap: bool = False
    autocast: bool = False  # training.mixed_precision resolved to bf16 (autocast over float32 weights)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda name: sum(self.phases[name].values()))

    @property
    def total(self) -> float:
        resident = sum(m.weights + m.optimizer for m in self.models) + sum(self.buffers.values())
        gradients = sum(m.gradients for m in self.models)
        phase = sum(self.phases[self.peak_phase].values())
        return resident + (max(gradients, phase) if self.gradients_overlap else gradients + phase)

    @property
    def offloaded(self) -> float:
        return sum(m.offloaded for m in self.models)


def model_memory(
    role: str,
    shape: ModelShape,
    head: str,
    dtype: str,
    launch: LaunchSpec,
    *,
    trainable: bool,
    lora: LoraConfig | None = None,
) -> ModelMemory:
    """Weights, gradients and AdamW states of one model on one device.

    Args:
        role: Name shown in the table (policy, value, ref_policy, reward, ...).
        head: 'lm' or 'score'.
        trainable: Whether an optimiser trains it (frozen models hold weights only).
        lora: Adapters on a frozen base: only they get gradients and optimiser states.
    """
    params = shape.parameters(head)
    adapters = shape.lora_parameters(lora) if lora is not None else 0
    train_params = (adapters or params) if trainable else 0
    width = DTYPE_BYTES[dtype]
    grad_width = LORA_BYTES if adapters else width
    weights = params * width + adapters * LORA_BYTES
    weights /= launch.partitions("weights")
    found = ModelMemory(role, params + adapters, train_params, weights)
    if launch.offload_params:
        found.offloaded, found.weights = found.weights, 0.0
    if not trainable:
        return found
    found.gradients = train_params * grad_width / launch.partitions("gradients")
    if launch.zero_stage is None:
        found.optimizer = 2 * train_params * grad_width  # torch AdamW: two moments in the parameter dtype
    else:
        found.optimizer = train_params * ADAM_BYTES_DEEPSPEED / launch.partitions("optimizer")
    if launch.offload_optimizer:
        # ZeRO-Offload keeps the fp32 gradient partitions and the optimiser on the CPU; the device keeps buckets.
        found.offloaded += found.optimizer + found.gradients
        found.optimizer = found.gradients = 0.0
    return found


def _buffers(
    launch: LaunchSpec,
    trained: list[tuple[ModelShape, ModelMemory]],
    dtype: str,
    device: str,
    frozen: list[ModelShape] | None = None,
) -> dict[str, float]:
    """DeepSpeed's communication buckets and, under ZeRO-3, the weights gathered for the layers being computed.

    `frozen` are the shapes of partitioned inference engines (ppo's ref_policy and reward models under ZeRO-3):
    they gather like the trained models, one engine at a time, and hold no gradients for the buckets.
    """
    out: dict[str, float] = {}
    width = DTYPE_BYTES[dtype]
    if launch.zero_stage is None:
        if launch.processes > 1:  # DDP's gradient buckets hold a second copy of every gradient
            out["ddp buckets"] = sum(m.trainable * width for _, m in trained)
        return out
    # ZeRO-1/2 keep two reduce buckets (overlap_comm), ZeRO-3 one. A GPU reserves them whole; on the CPU only the
    # pages that gradients pass through become resident, and the buckets fill in turn.
    buckets = launch.reduce_bucket * (2 if launch.zero_stage in (1, 2) else 1)
    if device == "cpu":
        buckets = min(buckets, sum(m.trainable for _, m in trained))
    out["zero buckets"] = buckets * width
    if launch.zero_stage == 3:
        # The trained models are one engine (ppo's policy and value run in one forward); every frozen model is an
        # engine of its own, gathered and released while it runs alone: the largest of these working sets counts.
        engines = [[s for s, _ in trained]] + [[s] for s in frozen or []]
        out["zero3 gathered"] = width * max(
            min(
                sum(s.parameters("lm") for s in engine),
                max(max(s.layer_parameters(), s.vocab_size * s.hidden_size) for s in engine) + launch.prefetch_bucket,
            )
            for engine in engines
        )
    return out


def autocast_on(cfg: StageBase, launch: LaunchSpec, device: str) -> bool:
    """Whether a stage computes under bf16 autocast, as `rlhf.precision.resolve_mixed_precision` decides at run time.

    `auto` counts as bf16 on cuda (the planner does not see the target GPU; every CUDA GPU from Ampere on has native
    bf16) and, on cpu, where this machine's CPU has bf16 matrix instructions. Under DeepSpeed, `bf16` is refused as
    the run refuses it, and `auto` is off.

    Raises:
        PlanError: `bf16` under a DeepSpeed launch config.
    """
    from rlhf.precision import DEEPSPEED_REFUSAL, cpu_has_native_bf16

    setting = cfg.training.mixed_precision
    if setting == "no":
        return False
    if launch.zero_stage is not None:
        if setting == "bf16":
            raise PlanError(f"{cfg.stage}: {DEEPSPEED_REFUSAL}")
        return False
    return setting == "bf16" or device == "cuda" or cpu_has_native_bf16()


def _autocast_copies(shape: ModelShape, head: str, checkpointing: bool) -> float:
    """The bf16 weight copies a training forward under autocast keeps for backward (one layer at a time with
    gradient checkpointing, whose recomputation casts the weights again)."""
    if not checkpointing:
        return AUTOCAST_BYTES * shape.autocast_parameters(head)
    layer = shape.layer_linear_parameters()
    return AUTOCAST_BYTES * (layer + shape.autocast_parameters(head) - shape.num_layers * layer)


def _overlap(launch: LaunchSpec, cfg: StageBase) -> bool:
    # DeepSpeed keeps gradients in persistent (partitioned) buffers; accumulation keeps them across micro-batches.
    return launch.zero_stage is None and cfg.training.gradient_accumulation_steps == 1


def plan_sft(cfg: SFTStage, shape: ModelShape, launch: LaunchSpec, device: str = "cuda") -> StagePlan:
    """sft: the causal LM trained on batch_size x max_length tokens per device, scored by TRL's tiled LM head."""
    dtype, checkpointing = cfg.model.dtype, cfg.training.gradient_checkpointing
    autocast = autocast_on(cfg, launch, device)
    policy = model_memory("policy", shape, "lm", dtype, launch, trainable=True, lora=cfg.model.lora)
    tokens = cfg.training.batch_size * cfg.data.max_length
    train = {
        "activations": tokens
        * shape.activation_bytes(cfg.data.max_length, checkpointing, DTYPE_BYTES[dtype], autocast),
        "lm head tiles": HEAD_TILES[device]
        * min(tokens, HEAD_TILE_TOKENS)
        * min(shape.vocab_size, HEAD_TILE_VOCAB)
        * 4,
    }
    if autocast:
        train["autocast weight copies"] = _autocast_copies(shape, "lm", checkpointing)
    buffers = _buffers(launch, [(shape, policy)], dtype, device)
    return StagePlan("sft", [policy], {"train": train}, buffers, _overlap(launch, cfg), autocast)


def plan_reward(cfg: RewardStage, shape: ModelShape, launch: LaunchSpec, device: str = "cuda") -> StagePlan:
    """reward: a one-logit classifier; chosen and rejected go through it together (2 x batch_size sequences)."""
    dtype, checkpointing = cfg.model.dtype, cfg.training.gradient_checkpointing
    autocast = autocast_on(cfg, launch, device)
    model = model_memory("reward", shape, "score", dtype, launch, trainable=True, lora=cfg.model.lora)
    tokens = 2 * cfg.training.batch_size * cfg.data.max_length
    train = {
        "activations": tokens * shape.activation_bytes(cfg.data.max_length, checkpointing, DTYPE_BYTES[dtype], autocast)
    }
    if autocast:
        train["autocast weight copies"] = _autocast_copies(shape, "score", checkpointing)
    buffers = _buffers(launch, [(shape, model)], dtype, device)
    return StagePlan("reward", [model], {"train": train}, buffers, _overlap(launch, cfg), autocast)


def plan_ppo(
    cfg: PPOStage,
    shapes: dict[str, ModelShape],
    launch: LaunchSpec,
    device: str = "cuda",
    implicit: frozenset[str] = frozenset(),
    shared_reference: frozenset[str] = frozenset(),
) -> StagePlan:
    """ppo: policy and value trained; ref_policy and reward models frozen; peak of rollout or update phase.

    The critic-free estimators (grpo, rloo, reinforce_pp) train the policy alone. A step samples
    `rollout.samples_per_prompt` replies for each of `training.batch_size` prompts.

    Args:
        shapes: 'policy', and 'value' (gae in critic mode) and 'reward/<name>' for every learned reward source.
        implicit: The learned reward sources that are implicit reward models: two causal LMs each (the trained one
            and its reference, of the same shape), with LM heads, instead of one classifier.
        shared_reference: The implicit ones whose reference is ppo's reference policy (a full copy, so no LoRA): ppo
            lends them its copy, so they add one causal LM each, not two.
    """
    dtype, lora, t = cfg.model.dtype, cfg.model.lora, cfg.training
    policy_shape = shapes["policy"]
    width = DTYPE_BYTES[dtype]
    policy = model_memory("policy", policy_shape, "lm", dtype, launch, trainable=True, lora=lora)
    models, trained = [policy], [(policy_shape, policy)]
    critic_free = cfg.advantage.estimator != "gae"
    if not critic_free and cfg.value.mode == "critic":
        critic = model_memory("value (critic)", shapes["value"], "score", dtype, launch, trainable=True)
        models.append(critic)
        trained.append((shapes["value"], critic))
    elif not critic_free:  # a scalar head on the policy's trunk, in float32
        head = policy_shape.hidden_size + 1
        models.append(
            ModelMemory(
                "value (head)",
                head,
                head,
                head * 4,
                head * 4 / launch.partitions("gradients"),
                head * 8 / launch.partitions("optimizer"),
            )
        )
    # The frozen models go through `rlhf.distributed.prepare_frozen`: replicas without ZeRO-3, inference engines
    # partitioned like the trained models under ZeRO-3 (their weights divide by the processes too).
    frozen = []
    if lora is None:  # with LoRA, ref_policy is the policy with its adapter disabled: no second copy
        frozen.append(("ref_policy", policy_shape, "lm"))
    for source in cfg.rewards:
        if source.model is not None and source.name in implicit:
            frozen.append((f"reward/{source.name}", shapes[f"reward/{source.name}"], "lm"))
            if source.name not in shared_reference:
                frozen.append((f"reward/{source.name} ref", shapes[f"reward/{source.name}"], "lm"))
        elif source.model is not None:
            frozen.append((f"reward/{source.name}", shapes[f"reward/{source.name}"], "score"))
    for role, shape, head in frozen:
        models.append(model_memory(role, shape, head, dtype, launch, trainable=False))

    seq = cfg.data.max_prompt_length + cfg.rollout.max_new_tokens
    response, batch = cfg.rollout.max_new_tokens, t.batch_size * cfg.rollout.samples_per_prompt
    vocab = policy_shape.vocab_size
    # Update phase: one micro-batch through policy (+ critic); response logits, log-softmax and their gradients.
    autocast, checkpointing = autocast_on(cfg, launch, device), t.gradient_checkpointing
    critic_shape = shapes["value"] if not critic_free and cfg.value.mode == "critic" else None
    micro = max(1, batch // cfg.update.num_minibatches // t.gradient_accumulation_steps)
    update = {"activations": micro * seq * policy_shape.activation_bytes(seq, checkpointing, width, autocast)}
    if critic_shape is not None:
        update["critic activations"] = micro * seq * critic_shape.activation_bytes(seq, checkpointing, width, autocast)
    update["response logits"] = 4 * micro * response * vocab * 4
    # Rollout phase: the KV cache of batch x (prompt + response), then scoring passes over the response logits.
    rollout = {
        "kv cache": policy_shape.kv_cache_elements(batch * seq) * (AUTOCAST_BYTES if autocast else width),
        "scoring logits": 2 * batch * response * vocab * 4,
    }
    if autocast:
        update["autocast weight copies"] = _autocast_copies(policy_shape, "lm", checkpointing) + (
            _autocast_copies(critic_shape, "score", checkpointing) if critic_shape is not None else 0
        )
        # Sampling and scoring run under autocast too; it caches the bf16 copies of trainable weights (not of the
        # frozen models, nor of a LoRA policy's frozen base) while its context lasts.
        if lora is None:
            rollout["autocast weight copies"] = AUTOCAST_BYTES * (
                policy_shape.autocast_parameters("lm")
                + (critic_shape.autocast_parameters("score") if critic_shape is not None else 0)
            )
    if launch.zero_stage == 3:
        # ppo gathers the whole policy (and its adapters) once for sampling (`gathered_weights`) instead of layer by
        # layer per decoding step: a full copy beside the partition while the rollout lasts.
        rollout["gathered policy"] = policy_shape.parameters("lm") * width
        if lora is not None:
            rollout["gathered policy"] += policy_shape.lora_parameters(lora) * LORA_BYTES
    buffers = _buffers(launch, trained, dtype, device, [shape for _, shape, _ in frozen])
    phases = {"rollout": rollout, "update": update}
    return StagePlan("ppo", models, phases, buffers, _overlap(launch, cfg), autocast)


def model_config(ref: str, recipe: PipelineRecipe | None) -> dict:
    """config.json of a model reference; `stage:NAME` follows the pipeline to the model that stage starts from."""
    seen = set()
    while ref.startswith(STAGE_REF_PREFIX):
        name = ref.removeprefix(STAGE_REF_PREFIX)
        if recipe is None or name not in recipe.sections() or name in seen:
            raise PlanError(f"'{ref}' refers to a pipeline stage that this recipe does not have")
        seen.add(name)
        ref = recipe.sections()[name].model.name_or_path
    from rlhf.models.loading import resolve_model_path

    path = Path(resolve_model_path(ref)).expanduser()
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text())
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(ref, "config.json")).read_text())
    except Exception as err:  # offline, unknown repo, no access: all mean the same thing here
        raise PlanError(f"cannot read config.json of '{ref}': {type(err).__name__}: {err}") from None


def plan_ppo_stage(cfg: PPOStage, shape, launch: LaunchSpec, device: str = "cuda") -> StagePlan:
    """The ppo estimate, reading each model's shape with `shape(ref)`: policy, learned rewards, the critic.

    A `shape` that also answers `shape.implicit_reward(ref)` (`ModelReader`) marks implicit reward models."""
    shapes = {"policy": shape(cfg.model.name_or_path)}
    learned = [s for s in cfg.rewards if s.model is not None]
    for source in learned:
        shapes[f"reward/{source.name}"] = shape(source.model)
    is_implicit = getattr(shape, "implicit_reward", lambda ref: False)
    implicit = frozenset(source.name for source in learned if is_implicit(source.model))
    # ppo lends its reference policy where an implicit reward model's reference is the same model, as `rlhf.stages.ppo`
    # does: only a full copy (no LoRA) of an unpinned revision.
    from rlhf.rewards.implicit_marker import same_model

    reference_of = getattr(shape, "implicit_reference", lambda ref: None)
    lends = cfg.model.lora is None and cfg.model.revision is None
    shared = frozenset(
        source.name
        for source in learned
        if lends
        and source.name in implicit
        and (reference := reference_of(source.model)) is not None
        and same_model(reference, cfg.model.name_or_path)
    )
    if cfg.advantage.estimator == "gae" and cfg.value.mode == "critic":
        init = cfg.value.init or (learned[0].model if learned else None)
        if init is None:
            raise PlanError("ppo: value.mode 'critic' needs value.init or a learned reward source")
        shapes["value"] = shape(init)
    return plan_ppo(cfg, shapes, launch, device, implicit, shared)


@dataclass(frozen=True)
class ModelReader:
    """Reads model references for the estimates: `reader(ref)` is the model's shape (`stage:NAME` followed through
    the pipeline recipe), `reader.implicit_reward(ref)` whether it is an implicit reward model."""

    recipe: PipelineRecipe | None = None

    def __call__(self, ref: str) -> ModelShape:
        return ModelShape.from_config(model_config(ref, self.recipe))

    def implicit_reward(self, ref: str) -> bool:
        """A reward stage of this recipe with an `implicit` block, or a directory with the implicit reward marker."""
        if ref.startswith(STAGE_REF_PREFIX):
            section = (self.recipe.sections() if self.recipe is not None else {}).get(
                ref.removeprefix(STAGE_REF_PREFIX)
            )
            return getattr(section, "implicit", None) is not None
        from rlhf.rewards.implicit_marker import is_implicit

        return is_implicit(ref)

    def implicit_reference(self, ref: str) -> str | None:
        """An implicit reward model's reference: its reward stage's starting model (`stage:sft` in a pipeline), or
        the directory its marker names; None for anything else (or a LoRA adapter scored against its own base)."""
        if ref.startswith(STAGE_REF_PREFIX):
            section = (self.recipe.sections() if self.recipe is not None else {}).get(
                ref.removeprefix(STAGE_REF_PREFIX)
            )
            if getattr(section, "implicit", None) is None:
                return None
            return section.model.name_or_path if section.model.lora is None else None
        from rlhf.rewards.implicit_marker import is_implicit, read_marker

        return read_marker(ref)[1] if is_implicit(ref) else None


def plan_stage(
    stage: StageBase, launch: LaunchSpec, recipe: PipelineRecipe | None = None, device: str = "cuda"
) -> StagePlan:
    """The estimate for one stage recipe, by the estimate its registry declaration names."""
    return stage_of(stage).plan(stage, ModelReader(recipe), launch, device)


def plan_recipe(recipe, launch: LaunchSpec, device: str = "cuda") -> list[StagePlan]:
    """Estimates for every selected training stage of a pipeline recipe, or for a stage recipe."""
    if isinstance(recipe, PipelineRecipe):
        stages = [s for s in recipe.selected_stages() if stage_of(s).plan is not None]
        return [plan_stage(s, launch, recipe, device) for s in stages]
    if stage_of(recipe).plan is None:
        planned = ", ".join(name for name, stage in STAGES.items() if stage.plan is not None)
        raise PlanError(f"rlhf plan estimates training stages ({planned}), not '{recipe.stage}'")
    return [plan_stage(recipe, launch, None, device)]


def format_plan(plans: list[StagePlan], launch: LaunchSpec) -> str:
    """A plain-text table per stage: each model's state, the transient terms, the total per device."""

    def gib(x: float) -> str:
        return f"{x / GIB:9.3f}"

    zero = (
        f"ZeRO-{launch.zero_stage}" if launch.zero_stage is not None else ("DDP" if launch.processes > 1 else "single")
    )
    offload = " + offload" if launch.offload_params or launch.offload_optimizer else ""
    lines = [f"launch {launch.name}: {launch.processes} process(es), {zero}{offload}; GiB per device"]
    for plan in plans:
        lines.append(f"\n{plan.stage}" + (" (bf16 autocast over float32 weights)" if plan.autocast else ""))
        lines.append(f"  {'model':<18}{'params':>15}{'trainable':>15}{'weights':>10}{'grads':>10}{'optim':>10}")
        for m in plan.models:
            lines.append(
                f"  {m.role:<18}{m.parameters:>15,}{m.trainable:>15,}{gib(m.weights)} {gib(m.gradients)}"
                f" {gib(m.optimizer)}"
            )
        for name, value in plan.buffers.items():
            lines.append(f"  {name:<48}{gib(value)}")
        for phase, terms in plan.phases.items():
            mark = " (peak)" if len(plan.phases) > 1 and phase == plan.peak_phase else ""
            for name, value in terms.items():
                lines.append(f"  {phase + ': ' + name + mark:<48}{gib(value)}")
        lines.append(f"  {'total per device':<48}{gib(plan.total)}")
        if plan.offloaded:
            lines.append(f"  {'offloaded to CPU memory, per process':<48}{gib(plan.offloaded)}")
    return "\n".join(lines)


def shipped_launch_configs() -> list[Path]:
    """The launch configs in the source tree's recipes/launch/."""
    return sorted((Path(__file__).resolve().parents[1] / "recipes" / "launch").glob("*.yaml"))


def fitting_configs(
    recipe, device_memory_gib: float, processes: int | None, device: str = "cuda"
) -> list[tuple[str, int, float | None, bool]]:
    """For each shipped launch config: (name, processes, largest stage total in GiB, whether it fits).

    A configuration fits when its largest stage plus the CUDA reserve (on cuda) stays within the device memory. One
    that would refuse the recipe (`training.mixed_precision: bf16` under DeepSpeed) has no total and does not fit.
    """
    reserve = CUDA_RESERVE_GIB if device == "cuda" else 0.0
    found = []
    for path in shipped_launch_configs():
        launch = LaunchSpec.from_file(path, processes if path.stem != "two_nodes" else None)
        try:
            worst = max(p.total for p in plan_recipe(recipe, launch, device)) / GIB
        except PlanError as err:
            if "mixed_precision" not in str(err):
                raise
            found.append((launch.name, launch.processes, None, False))
            continue
        found.append((launch.name, launch.processes, worst, worst + reserve <= device_memory_gib))
    return found
