"""What a benchmark process measures about itself and the machine: matmul ceiling, memory, versions, load, commit."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from importlib import metadata
from pathlib import Path

NUM_THREADS = 2  # the reference's setting: torch.set_num_threads(2)
LIBRARIES = ("torch", "transformers", "trl", "accelerate", "peft", "deepspeed", "numpy")


def matmul_ceiling(sizes: tuple[int, ...] = (1024, 2048), seconds_per_size: float = 1.0) -> float:
    """Best fp32 GFLOP/s of square matmuls at the current thread count: the reference's `matmul_probe`.

    The VM's speed drifts within minutes, so every run probes right before and right after its timed region.
    """
    import torch

    best = 0.0
    for n in sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        for _ in range(2):
            torch.mm(a, b, out=c)
        t_end = time.perf_counter() + seconds_per_size
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: resident now, VmHWM: peak resident so far); -1 if unreadable."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (VmHWM, or getrusage where /proc is missing)."""
    kb = status_kb("VmHWM")
    if kb < 0:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def versions() -> dict[str, str]:
    """Python and the versions of the libraries that decide speed."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (a value far above the core count makes timings meaningless)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """Cores, CPU model and load: enough to tell whether two results came from comparable conditions."""
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "load_average": load_average()}


def git_commit(repo: Path | None = None) -> dict:
    """The commit the benchmarked code is at, and whether tracked files differ from it."""
    repo = repo or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
