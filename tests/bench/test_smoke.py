"""The harness end to end on a few episodes of tiny ppo: one JSON record with every field, passes in every phase."""

import json
import subprocess
import sys

import pytest
from transformers import AutoConfig

from rlhf.bench.flops import layer_matmul_params
from rlhf.bench.results import missing_fields
from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_ppo_harness_smoke(tmp_path):
    results_file = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/bench.py",
            "ppo",
            "--size",
            "tiny",
            "--episodes",
            "16",
            "--models",
            str(tmp_path / "models"),
            "--results",
            str(results_file),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(proc.stdout)
    assert missing_fields(rec) == []
    assert rec["episodes"] == 16 and rec["settings"]["threads"] == 2
    assert 16 <= rec["gen_tokens"] <= 16 * 48 and rec["episodes_per_s"] > 0
    assert {"generate", "score", "update"} <= set(rec["forward_s"])
    assert "reward" in rec["forward_s"]["score"] and "policy" in rec["forward_s"]["update"]
    # The executed FLOPs are the per-phase counts added up, and generation counts at least every sampled token once
    # through the policy's layers (a pass the instrumentation stops seeing, as after the cache rename, breaks this).
    cells = [cell for roles in rec["forward_s"].values() for cell in roles.values()]
    assert rec["flops"] == sum(cell["flops"] for cell in cells)
    policy = AutoConfig.from_pretrained(tmp_path / "models" / "tiny")
    assert rec["forward_s"]["generate"]["policy"]["flops"] >= 2 * layer_matmul_params(policy) * rec["gen_tokens"]
    assert rec["achieved_gflops"] == pytest.approx(rec["flops"] / rec["train_s"] / 1e9)
    assert rec["peak_rss_mb"] > 100  # the process holds torch and three models: far above 100 MB
    # Padding: score and update each split into useful and padded FLOPs, adding up to the phase's executed FLOPs.
    for phase in ("score", "update"):
        cell = rec["padding"][phase]
        executed = sum(role["flops"] for role in rec["forward_s"][phase].values())
        assert cell["flops"] == executed and 0 < cell["useful_flops"] <= executed
        assert cell["padded_flops"] == executed - cell["useful_flops"]
        assert 0 <= cell["padded_token_share"] < 1
    # Memory by phase: read in the order the run reaches them, each peak at least the previous one.
    memory = rec["memory_by_phase_mb"]
    assert list(memory) == ["setup", "rollout", "score", "update", "end"]
    peaks = [reading["hwm_mb"] for reading in memory.values()]
    # The last step's log falls between the update's reading and the end (the save comes after it); the process
    # peak is read later still, after the matmul probe. The kernel's VmHWM can read a few pages lower later on (its
    # RSS counters are cached per thread and folded in lazily: a fresh-clone CI run saw 555.621 then 555.609 MB), so
    # "at least the previous one" allows 1 MB.
    slack = 1.0
    assert all(later >= earlier - slack for earlier, later in zip(peaks, peaks[1:], strict=False)), peaks
    assert memory["update"]["hwm_mb"] - slack <= rec["peak_rss_mb"] <= peaks[-1] + slack
    assert peaks[-1] <= rec["peak_rss_process_mb"] + slack
    assert (tmp_path / "models" / "tiny" / "config.json").is_file()
    assert (tmp_path / "models" / "tiny-reward" / "config.json").is_file()
    assert json.loads(results_file.read_text().splitlines()[-1])["date"] == rec["date"]
