"""Distributed set-up: the one place that knows about process groups, Accelerate and DeepSpeed.

The launch config (accelerate launch --config_file ...) chooses the hardware layout; stages only ask this module for
an Accelerator or for the arguments a transformers Trainer needs. On machines without CUDA the process group uses
gloo, so the same command works on a laptop and in CI.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def world_size() -> int:
    """Number of processes in the launch (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this is global rank 0 (true without a launcher)."""
    return int(os.environ.get("RANK", "0")) == 0


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def prepare_environment() -> None:
    """Sets what must be set before torch.distributed or DeepSpeed is imported.

    Without CUDA, DeepSpeed must be told to use its CPU accelerator (it otherwise probes for CUDA and fails).
    """
    if not cuda_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def using_deepspeed() -> bool:
    """Whether the launch asked for DeepSpeed (accelerate launch --use_deepspeed or a DeepSpeed config)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def trainer_arguments() -> dict[str, Any]:
    """TrainingArguments fields that make a Trainer use the CPU and gloo where there is no CUDA."""
    if cuda_available():
        return {}
    args: dict[str, Any] = {"use_cpu": True}
    if world_size() > 1:
        # Without gloo every rank believes it is alone (world size 1) and DeepSpeed's batch assertion fails.
        args["ddp_backend"] = "gloo"
    return args


DEEPSPEED_PRECISION = {"bfloat16": "bf16", "float16": "fp16"}


def make_accelerator(dtype: str | None = None, **kwargs: Any):
    """An Accelerator for our own training loops (ppo), using the CPU and gloo where there is no CUDA.

    Under a DeepSpeed launch the Accelerator must not be given `cpu=True` (accelerate then silently drops DeepSpeed
    while the process group still says DEEPSPEED); the CPU comes from the process state created first, as the
    Trainer does it. Without DeepSpeed, `cpu=True` turns a multi-process launch into DDP on CPU (MULTI_CPU).

    Args:
        dtype: The recipe's `model.dtype`. Under DeepSpeed, bfloat16 or float16 fills the config's "auto" bf16/fp16
            switch (weights in that dtype, fp32 master weights in the optimiser, as the Trainer stages get it);
            otherwise DeepSpeed would train in fp32. Without DeepSpeed the loop trains in the dtype the weights were
            loaded in, and this changes nothing.
        kwargs: Passed to `Accelerator`.
    """
    from accelerate import Accelerator, PartialState

    if not cuda_available():
        # Without gloo every rank believes it is alone (world size 1).
        PartialState(cpu=True, **({"backend": "gloo"} if world_size() > 1 else {}))
        if not using_deepspeed():
            kwargs.setdefault("cpu", True)
    if using_deepspeed():
        kwargs["deepspeed_plugin"] = fresh_deepspeed_plugin()
        if dtype in DEEPSPEED_PRECISION:
            kwargs.setdefault("mixed_precision", DEEPSPEED_PRECISION[dtype])
    else:
        # Accelerate keeps one process-wide state and refuses a new Accelerator whose mixed precision differs from
        # it: an earlier stage of the same process (or an earlier run in a test) would fix this stage's precision.
        # Drop it (not the process group, which PartialState keeps), as `fresh_deepspeed_plugin` does.
        release_accelerator_state()
    return Accelerator(**kwargs)


def release_accelerator_state() -> None:
    """Drops the Accelerator state a stage made (its mixed precision, its plugin), keeping the process group.

    Accelerate keeps one process-wide state, and a later `Accelerator()` without arguments silently takes the
    earlier one's settings: after a bf16 ppo stage, a user's plain Accelerator in the same process would compute in
    bf16. Our own stages reset the state as they start (`make_accelerator`); this restores the defaults for whatever
    runs after them.
    """
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)


def unwrap(accelerator, model):
    """The module inside `model` as `accelerator.prepare` returned it (DDP or DeepSpeed engine removed).

    A one-process launch prepares no wrapper, so the model is returned as it is: `accelerator.unwrap_model` would
    import DeepSpeed whenever it is installed, about 22 MB of resident memory in a run that never uses it.
    """
    return model if is_unwrapped(accelerator) else accelerator.unwrap_model(model)


def is_unwrapped(accelerator) -> bool:
    """Whether `accelerator.prepare` leaves models as they are (one process, no DDP, no DeepSpeed engine)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.NO


def fresh_deepspeed_plugin():
    """A DeepSpeed plugin read afresh from the launch's config file, its "auto" values still unfilled.

    Accelerate keeps one process-wide AcceleratorState, and a new Accelerator reuses the plugin of the state already
    there. An earlier stage of the same launch (the reward Trainer) has filled that plugin's "auto" values in place
    with its own batch size, so a later stage would see numbers instead of "auto" and refuse its own micro-batch.
    Dropping the accelerator state (not the process group, which PartialState keeps) and reading the config file
    again gives each stage the launch's config as written, as the Trainer does for the sft and reward stages.
    """
    from accelerate.utils import DeepSpeedPlugin

    release_accelerator_state()
    return DeepSpeedPlugin()


@contextmanager
def single_process_loading() -> Iterator[None]:
    """Lets one process load a whole model while the others wait (e.g. the main process evaluating final/).

    Under a ZeRO-3 launch, transformers builds every model inside `deepspeed.zero.Init`, which partitions the weights
    with collectives that every rank must join: a load on the main process alone then waits forever. Inside this
    context transformers loads plain, unpartitioned models; the ZeRO-3 setting is restored on exit.
    """
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:
        yield
        return
    # transformers keeps the launch's DeepSpeed config behind this module-level weak reference (no public getter for
    # the object itself, only set/unset), so it is saved and put back by hand.
    saved = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def zero_stage(accelerator) -> int | None:
    """The DeepSpeed ZeRO stage (0-3) of the launch, or None without DeepSpeed."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return None
    return int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def configure_deepspeed(accelerator, *, micro_batch_size: int, max_grad_norm: float | None) -> None:
    """Fills the DeepSpeed config's batch and clipping values for a loop without a dataloader (ppo).

    Call before `accelerator.prepare`. Accelerate derives the micro-batch from the dataloaders it prepares and would
    otherwise clip gradients at 1.0; ppo prepares none and clips at `training.max_grad_norm` (None: no clipping).
    Values the DeepSpeed JSON sets explicitly must agree with the recipe, or this raises and names them.
    """
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    accumulation = accelerator.gradient_accumulation_steps
    wanted = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro_batch_size * accumulation * accelerator.num_processes,
        "gradient_clipping": max_grad_norm if max_grad_norm is not None else 0.0,
    }
    mismatches: list[str] = []
    for key, value in wanted.items():
        plugin.fill_match(key, mismatches, must_match=True, **{key: value})
    if mismatches:
        raise ValueError(
            'the DeepSpeed config disagrees with the recipe (set these to "auto"):\n' + "\n".join(mismatches)
        )


def prepare_frozen(accelerator, model):
    """A frozen model (ref_policy, a reward model) ready for inference under the launch.

    Under ZeRO-3 it becomes a DeepSpeed engine without optimiser, so its weights stay sharded like the trained ones
    (each forward then gathers layer by layer and is a collective: every rank must make the same forward calls).
    Under ZeRO-1/2, DDP or one process it is a plain replica on the device. Call after the trained model is prepared
    (the DeepSpeed config's "auto" values are filled by then).
    """
    model.eval().requires_grad_(False)
    if zero_stage(accelerator) != 3:
        return model.to(accelerator.device)
    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    # Inference only: no optimiser, scheduler or optimiser offload to build.
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    config["zero_optimization"].pop("offload_optimizer", None)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine  # keep the engine (not engine.module): dropping it removes the hooks that gather the weights


@contextmanager
def gathered_weights(accelerator, engine, module=None) -> Iterator[None]:
    """Under ZeRO-3, the weights of `module` (default: all of `engine`) gathered whole for a block of inference.

    Without it every forward gathers each layer again: during sampling a collective per layer and decoding step.
    Inside it the weights are gathered once and the engine's per-module ZeRO hooks are removed (put back on exit,
    as TRL does for generation), so forwards are local compute and ranks need not make the same calls. Costs one
    whole copy of those weights per process. A no-op without ZeRO-3 (or without an engine).

    The hook lists and `_register_deepspeed_module` are DeepSpeed internals (TRL's `unwrap_model_for_generation` uses
    the same); tests/distributed/test_ppo_distributed.py checks greedy tokens and training after the context.
    """
    if engine is None or zero_stage(accelerator) != 3:
        yield
        return
    import deepspeed

    module = module if module is not None else engine.module
    offload = engine.optimizer.parameter_offload if hasattr(engine.optimizer, "parameter_offload") else engine.optimizer
    with deepspeed.zero.GatheredParameters(list(module.parameters())):
        for param in offload.module.parameters():
            param.ds_active_sub_modules.clear()
        for hook in offload.forward_hooks + offload.backward_hooks:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield
        finally:
            # The coordinator's recorded module order is stale after forwards it did not see.
            coordinator = offload.get_param_coordinator()
            if not coordinator.is_invalid_trace():
                coordinator._invalidate_trace()
            offload._register_deepspeed_module(offload.module)


def launch_summary(accelerator, module) -> dict[str, Any]:
    """How the run was distributed, for a manifest: world size, distribution type, ZeRO stage, parameter counts.

    `parameters` counts the elements of `module`; `parameters_local` those this process stores (under ZeRO-3 its
    partition, about `parameters / world_size`), which records that the weights really were partitioned.
    """
    params = list(module.parameters())
    return {
        "world_size": accelerator.num_processes,
        "distributed_type": accelerator.distributed_type.value,
        "zero_stage": zero_stage(accelerator),
        "parameters": sum(getattr(p, "ds_numel", p.numel()) for p in params),
        "parameters_local": sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params),
    }


def full_state_dict(accelerator, model) -> dict[str, Any] | None:
    """The whole state dict of a prepared model on the main process (every rank must call this).

    Under ZeRO-3 the engine's own gather works whatever the config says about
    `stage3_gather_16bit_weights_on_model_save` (accelerate's get_state_dict refuses without it).
    """
    if zero_stage(accelerator) == 3:
        return model._zero3_consolidated_16bit_state_dict()
    # Nothing wraps the model without a launch: what get_state_dict returns then, without its DeepSpeed import.
    return unwrap(accelerator, model).state_dict() if is_unwrapped(accelerator) else accelerator.get_state_dict(model)


def all_ranks_done(accelerator):
    """A cross-rank 'everyone finished sampling' check for `rlhf.generation.sampling.sample`, or None on one process.

    Under ZeRO-3 every rank must take part in every forward, so a rank whose responses all ended keeps stepping until
    all ranks are done.
    """
    if accelerator.num_processes == 1:
        return None
    import torch

    def all_done(done: bool) -> bool:
        flag = torch.tensor([0.0 if done else 1.0], device=accelerator.device)
        return accelerator.reduce(flag, reduction="sum").item() == 0

    return all_done


def shutdown() -> None:
    """Ends a multi-process launch's process group: every rank waits for the others, then the group is destroyed.

    Left to interpreter exit, the group's communication threads are torn down in whatever order the ranks exit, while
    a peer may still be talking to them; torch warns about it and a rank can abort there. Does nothing in a
    one-process run.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
