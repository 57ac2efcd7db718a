"""Where the time of a ppo run goes: sampled stacks split by loop phase, and torch operators by input shape.

`py-spy` (PyPI; found on PATH, next to this Python, or via $PY_SPY) samples the worker process from outside, so it
adds little overhead. Each sample is put in a phase by the line of `rlhf.stages.ppo.run` it is under: the phase
boundaries are the loop's own timing statements (`score_started = ...`, `update_started = ...`), found in the source
when the profile is read, so they follow edits to the loop. Without py-spy, cProfile runs in the worker instead (it
slows Python-heavy code, so its shares overstate Python overhead). `torch` mode records torch.profiler operator
times grouped by input shape (which matmuls, which logits, how many small ops).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

from rlhf.bench.baseline import REPO, BenchError

RUN_FRAME = re.compile(r"^run \((?:.*/)?rlhf/stages/ppo\.py:(\d+)\)$")
LINE_NUMBER = re.compile(r":\d+\)$")
# (phase that starts at the line holding this statement, statement); order matters.
MARKERS = (
    ("rollout", "for step in range(first_step, total_steps):"),
    ("score", "score_started = time.perf_counter()"),
    ("update", "update_started = time.perf_counter()"),
    ("log", "update_time = time.perf_counter()"),
    ("save", "final_dir = output_dir / FINAL"),
)


def find_py_spy() -> str | None:
    """The py-spy executable, if there is one."""
    candidates = [os.environ.get("PY_SPY"), shutil.which("py-spy"), str(Path(sys.executable).parent / "py-spy")]
    return next((c for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)


def phase_boundaries(source: Path) -> list[tuple[int, str]]:
    """(first line, phase) pairs of `rlhf.stages.ppo.run`; lines before the loop are "setup"."""
    lines = source.read_text(encoding="utf-8").splitlines()
    bounds = [(0, "setup")]
    for phase, statement in MARKERS:
        number = next((i + 1 for i, line in enumerate(lines) if line.strip().startswith(statement)), None)
        if number is None:
            return [(0, "run")]  # the loop changed shape: report the run as a whole
        bounds.append((number + (1 if phase == "log" else 0), phase))
    return bounds


def phase_of(line: int, bounds: list[tuple[int, str]]) -> str:
    return [phase for start, phase in bounds if start <= line][-1]


def summarize_stacks(raw: Path, source: Path, top: int = 12) -> dict:
    """Per phase: share of samples, top leaf frames (self time) and top inclusive functions below the loop."""
    bounds = phase_boundaries(source)
    samples: Counter = Counter()
    leaves: dict[str, Counter] = defaultdict(Counter)
    inclusive: dict[str, Counter] = defaultdict(Counter)
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        index = next((i for i, f in enumerate(frames) if RUN_FRAME.match(f)), None)
        if index is None:
            phase, below = "outside run()", frames[-1:]
        else:
            phase = phase_of(int(RUN_FRAME.match(frames[index]).group(1)), bounds)
            below = frames[index + 1 :] or [frames[index]]
        samples[phase] += n
        leaves[phase][LINE_NUMBER.sub(")", below[-1])] += n
        for name in {LINE_NUMBER.sub(")", f) for f in below}:
            inclusive[phase][name] += n
    total = sum(samples.values()) or 1
    return {
        phase: {
            "share": round(n / total, 4),
            "samples": n,
            "top_self": [(f, round(c / n, 3)) for f, c in leaves[phase].most_common(top)],
            "top_inclusive": [(f, round(c / n, 3)) for f, c in inclusive[phase].most_common(top)],
        }
        for phase, n in samples.most_common()
    }


def profile_ppo(options: dict, out_dir: Path, tool: str = "auto", native: bool = False, rate: int = 100) -> dict:
    """Profiles one ppo measurement; writes raw output to `out_dir` and returns {"result", "profile", "tool"}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spy = find_py_spy()
    if tool == "py-spy" and spy is None:
        raise BenchError("py-spy not found: pip install py-spy, or set $PY_SPY")
    if tool in ("auto", "py-spy") and spy is not None:
        raw = out_dir / "py-spy.txt"
        cmd = [
            spy,
            "record",
            "--format",
            "raw",
            "--rate",
            str(rate),
            "-o",
            str(raw),
            *(["--native"] if native else []),
            "--",
            sys.executable,
            "-m",
            "rlhf.bench.worker",
            "ppo",
            json.dumps(options),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines or not raw.is_file():
            raise BenchError("py-spy run failed:\n" + "\n".join((proc.stdout + proc.stderr).splitlines()[-30:]))
        source = REPO / "rlhf" / "stages" / "ppo.py"
        return {
            "tool": "py-spy" + (" --native" if native else ""),
            "result": json.loads(lines[-1][7:]),
            "profile": summarize_stacks(raw, source),
            "raw": str(raw),
        }
    mode = "torch" if tool == "torch" else "cprofile"
    cmd = [
        sys.executable,
        "-m",
        "rlhf.bench.worker",
        "ppo",
        json.dumps({**options, "profile": mode, "profile_dir": str(out_dir)}),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise BenchError(f"{mode} run failed:\n" + "\n".join((proc.stdout + proc.stderr).splitlines()[-30:]))
    text = (out_dir / f"{mode}.txt").read_text(encoding="utf-8")
    return {"tool": mode, "result": json.loads(lines[-1][7:]), "profile": text, "raw": str(out_dir / f"{mode}.txt")}


class InProcessProfiler:
    """cProfile or torch.profiler around a stage run, writing a text table to `<out_dir>/<mode>.txt`."""

    def __init__(self, mode: str | None, out_dir: str | None):
        self.mode, self.out_dir = mode, Path(out_dir) if out_dir else None
        self._profiler = None

    def __enter__(self) -> InProcessProfiler:
        if self.mode == "cprofile":
            import cProfile

            self._profiler = cProfile.Profile()
            self._profiler.enable()
        elif self.mode == "torch":
            import torch

            self._profiler = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True
            )
            self._profiler.__enter__()
        elif self.mode is not None:
            raise ValueError(f"unknown profile mode {self.mode!r} (cprofile or torch)")
        return self

    def __exit__(self, *exc) -> None:
        if self.mode is None:
            return
        path = self.out_dir / f"{self.mode}.txt"
        if self.mode == "cprofile":
            import io
            import pstats

            self._profiler.disable()
            stream = io.StringIO()
            stats = pstats.Stats(self._profiler, stream=stream)
            stats.sort_stats("tottime").print_stats(40)
            stats.sort_stats("cumulative").print_stats(60)
            path.write_text(stream.getvalue(), encoding="utf-8")
        else:
            self._profiler.__exit__(*exc)
            averages = self._profiler.key_averages(group_by_input_shape=True)
            table = averages.table(
                sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=50, max_shapes_column_width=70
            )
            by_op = self._profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
            path.write_text(by_op + "\n\n" + table, encoding="utf-8")


def format_summary(summary: dict, top: int = 8) -> str:
    """Plain-text view of `summarize_stacks`: per phase its share, then top self and inclusive frames."""
    out = []
    for phase, info in summary.items():
        out.append(f"== {phase}: {100 * info['share']:.1f}% of samples")
        out.append("   self:      " + "; ".join(f"{f} {100 * s:.0f}%" for f, s in info["top_self"][:top]))
        out.append("   inclusive: " + "; ".join(f"{f} {100 * s:.0f}%" for f, s in info["top_inclusive"][:top]))
    return "\n".join(out)
