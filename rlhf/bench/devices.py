"""The device a benchmark runs on, and its published peaks: what model FLOPs utilisation (MFU) is measured against.

MFU is achieved model FLOPs per second (the `flops` formulas: matmul weights and attention products, a training pass
3x a forward) over the device's peak dense FLOP/s in the precision that ran. The peaks are the vendors' datasheet
numbers for dense tensor-core maths (no 2:4 sparsity) in bf16, and plain fp32 on the CUDA cores (the benchmark
leaves TF32 off, torch's default for matmuls). For decoding, which streams every weight once per step, the
bandwidth share (weight bytes per second over the HBM peak) says more than MFU; it is reported beside it.

An unknown device (any CPU, a GPU not in the table) gets achieved FLOP/s and "MFU unknown", never a guessed peak.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Peak:
    """A device's datasheet peaks.

    Attributes:
        name: The product the numbers are for.
        bf16_tflops: Dense bf16 tensor-core TFLOP/s.
        fp32_tflops: fp32 TFLOP/s without tensor cores.
        hbm_tb_s: Memory bandwidth, TB/s.
    """

    name: str
    bf16_tflops: float
    fp32_tflops: float
    hbm_tb_s: float

    def tflops(self, precision: str) -> float:
        """The peak for "bf16" or "fp32"."""
        return {"bf16": self.bf16_tflops, "fp32": self.fp32_tflops}[precision]


# (pattern on the lower-cased `torch.cuda.get_device_name`, peak), first match wins: specific variants before their
# family ("NVIDIA H100 80GB HBM3" is the SXM part; PCIe and NVL parts say so in their names).
PEAKS: tuple[tuple[str, Peak], ...] = (
    (r"h200 nvl", Peak("H200 NVL", 835.0, 60.0, 4.8)),
    (r"h200", Peak("H200 SXM", 989.4, 66.9, 4.8)),
    (r"h100 nvl", Peak("H100 NVL", 835.0, 60.0, 3.9)),
    (r"h100.*pcie", Peak("H100 PCIe", 756.5, 51.2, 2.0)),
    (r"h100", Peak("H100 SXM", 989.4, 66.9, 3.35)),
    (r"a100.*40gb", Peak("A100 40GB", 312.0, 19.5, 1.555)),
    (r"a100", Peak("A100 80GB", 312.0, 19.5, 2.0)),
    (r"l40s", Peak("L40S", 362.1, 91.6, 0.864)),
    (r"\bl4\b", Peak("L4", 121.0, 30.3, 0.3)),
)
DEVICES = ("auto", "cpu", "cuda")


class DeviceError(ValueError):
    """The requested device is not there."""


def resolve(option: str) -> str:
    """ "cuda" or "cpu" for a `--device` option: "auto" takes CUDA when present; "cuda" without one is an error."""
    import torch

    if option not in DEVICES:
        raise DeviceError(f"unknown device {option!r}; choose one of {', '.join(DEVICES)}")
    has_cuda = torch.cuda.is_available()
    if option == "cuda" and not has_cuda:
        raise DeviceError("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
    return "cuda" if option == "cuda" or (option == "auto" and has_cuda) else "cpu"


def peak_for(device_name: str) -> Peak | None:
    """The table's peaks for a CUDA device name (None when the device is not in the table)."""
    name = device_name.lower()
    return next((peak for pattern, peak in PEAKS if re.search(pattern, name)), None)


def describe(device: str) -> dict:
    """What a record says about the device: name, and for CUDA its capability, memory and the table's peaks."""
    import platform

    import torch

    if device != "cuda":
        return {"type": "cpu", "name": platform.processor() or platform.machine(), "peak": None}
    props = torch.cuda.get_device_properties(0)
    peak = peak_for(props.name)
    return {
        "type": "cuda",
        "name": props.name,
        "capability": list(torch.cuda.get_device_capability(0)),
        "memory_gib": props.total_memory / 2**30,
        "cuda": torch.version.cuda,
        "peak": None if peak is None else peak.__dict__,
    }


def utilisation(flops: float, seconds: float, peak: Peak | None, precision: str) -> dict:
    """Achieved TFLOP/s, and MFU (a fraction) against `peak` in `precision`; MFU is None when the peak is unknown."""
    achieved = flops / seconds / 1e12
    if peak is None:
        return {"achieved_tflops": achieved, "mfu": None, "mfu_note": "MFU unknown: no peak FLOP/s for this device"}
    return {
        "achieved_tflops": achieved,
        "mfu": achieved / peak.tflops(precision),
        "peak_tflops": peak.tflops(precision),
    }


def bandwidth_share(bytes_moved: float, seconds: float, peak: Peak | None) -> dict:
    """Achieved TB/s of `bytes_moved`, and its share of the peak memory bandwidth (None when unknown)."""
    achieved = bytes_moved / seconds / 1e12
    return {"achieved_tb_s": achieved, "bandwidth_share": None if peak is None else achieved / peak.hbm_tb_s}
