"""Distributed set-up: the one place that knows about process groups, Accelerate and DeepSpeed.

The launch config (accelerate launch --config_file ...) chooses the hardware layout; stages only ask this module for
an Accelerator or for the arguments a transformers Trainer needs. On machines without CUDA the process group uses
gloo, so the same command works on a laptop and in CI.
"""

from __future__ import annotations

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


def make_accelerator(**kwargs: Any):
    """An Accelerator for our own training loops (ppo), using the CPU and gloo where there is no CUDA.

    Under a DeepSpeed launch the Accelerator must not be given `cpu=True` (accelerate then silently drops DeepSpeed
    while the process group still says DEEPSPEED); the CPU comes from the process state created first, as the
    Trainer does it. Without DeepSpeed, `cpu=True` turns a multi-process launch into DDP on CPU (MULTI_CPU).
    """
    from accelerate import Accelerator, PartialState

    if not cuda_available():
        # Without gloo every rank believes it is alone (world size 1).
        PartialState(cpu=True, **({"backend": "gloo"} if world_size() > 1 else {}))
        if not using_deepspeed():
            kwargs.setdefault("cpu", True)
    return Accelerator(**kwargs)


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
