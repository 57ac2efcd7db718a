"""Mixed precision: whether this machine multiplies bf16 matrices natively, and what `training.mixed_precision` means.

`training.mixed_precision: bf16` keeps the weights, gradients and optimiser state in float32 and runs the matrix
products of the training forward and backward (and, in ppo, of sampling and scoring) in bf16 under autocast. It pays
where the hardware has bf16 matrix instructions: CUDA GPUs from Ampere on, and x86 CPUs with AVX512-BF16 or AMX
(measured on a 2-core AMD EPYC with AVX512-BF16: a 1024 x 1024 matmul at 980 GFLOP/s in bf16 against 210 in fp32,
a linear layer's forward and backward under autocast 3.8x faster). Elsewhere bf16 is emulated and slower than fp32,
so `auto` takes bf16 only where it is native, checked at run time on the machine that trains.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

logger = logging.getLogger("rlhf")

# /proc/cpuinfo flags of native bf16 matrix instructions (x86: AVX512-BF16, AMX-BF16; Arm: the BF16 extension).
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has bf16 matrix instructions (read from the kernel's CPU flags; False where unreadable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        # x86 lists them under "flags", Arm under "Features".
        if key.strip() in ("flags", "Features"):
            return bool(CPU_BF16_FLAGS & set(value.split()))
    return False


def native_bf16(device_type: str) -> bool:
    """Whether `device_type` ("cpu" or "cuda") multiplies bf16 matrices natively on this machine."""
    import torch

    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu_has_native_bf16()


class PrecisionError(ValueError):
    """A precision setting the launch cannot honour; the message says what to set instead."""


# Why a DeepSpeed launch refuses `training.mixed_precision: bf16`, and what to set instead (run and planner).
DEEPSPEED_REFUSAL = (
    "training.mixed_precision: bf16 is autocast over float32 weights, which a DeepSpeed launch does not do; set "
    "model.dtype: bfloat16 instead (DeepSpeed's bf16: bf16 weights, float32 master weights in the optimiser) and "
    "training.mixed_precision: no"
)


def resolve_mixed_precision(setting: str, device_type: str, stage: str = "") -> str:
    """The mixed precision a stage trains in: "bf16" or "no", with `training.mixed_precision: auto` resolved.

    Under a DeepSpeed launch there is no autocast over float32 weights: DeepSpeed's bf16 mode keeps the weights
    themselves in bf16 (float32 master copies in the optimiser), which is `model.dtype: bfloat16`, and ZeRO-3 refuses
    a model whose float32 value head sits beside bf16 weights. So `bf16` is refused there with that advice, and
    `auto` resolves to "no".

    Args:
        setting: The recipe's `training.mixed_precision` ("no", "bf16" or "auto").
        device_type: The training device ("cpu" or "cuda").
        stage: The stage's name, for the log line.

    Raises:
        PrecisionError: `bf16` under a DeepSpeed launch.
    """
    from rlhf.distributed import using_deepspeed

    prefix = f"{stage}: " if stage else ""
    if setting != "no" and using_deepspeed():
        if setting == "bf16":
            raise PrecisionError(prefix + DEEPSPEED_REFUSAL)
        logger.info("%straining.mixed_precision=auto -> no (DeepSpeed launch: use model.dtype bfloat16)", prefix)
        return "no"
    if setting != "auto":
        return setting
    resolved = "bf16" if native_bf16(device_type) else "no"
    logger.info(
        "%straining.mixed_precision=auto -> %s (%s bf16 matrix instructions on %s)",
        prefix,
        resolved,
        "native" if resolved == "bf16" else "no native",
        device_type,
    )
    return resolved
