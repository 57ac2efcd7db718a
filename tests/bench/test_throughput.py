"""The throughput workload on the CPU: model shapes (no weights for the big ones), FLOP and MFU arithmetic, the device
table, and the command line end to end on the tiny shape. Its CUDA run is in tests/gpu/test_gpu.py."""

import json
import statistics
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf.bench import devices, throughput
from rlhf.bench import flops as F
from rlhf.bench.results import missing_fields
from tests.bench.test_flops import TINY
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("shape", throughput.SHAPES)
def test_shapes_have_their_published_sizes(shape):
    config = throughput.shape_config(shape)
    with torch.device("meta"):  # parameters without storage: the 1.5B shape costs no memory here
        model = AutoModelForCausalLM.from_config(config)
    built = sum(p.numel() for p in model.parameters())  # tied embedding and lm_head count once
    assert F.parameter_count(config) == built
    if shape in throughput.PUBLISHED_PARAMS:
        assert built == throughput.PUBLISHED_PARAMS[shape]
        assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.tie_word_embeddings
        assert model.lm_head.weight is model.model.embed_tokens.weight
    assert {"qwen2-0.5b": 0.494e9, "qwen2-1.5b": 1.544e9, "tiny": 0.82e6}[shape] == pytest.approx(built, rel=1e-3)


def test_parameter_count_follows_biases_and_tying():
    from transformers import LlamaConfig

    base = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    for extra in ({}, {"attention_bias": True}, {"mlp_bias": True}, {"tie_word_embeddings": True}):
        config = LlamaConfig(vocab_size=64, **base, **extra)
        with torch.device("meta"):
            built = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        assert F.parameter_count(config) == built, extra


def test_update_flops_by_hand():
    # 2 rows of 3 prompt + 4 response tokens: the body on 7 positions attending over 7, the lm_head on 5 per row.
    body = F.trunk_flops(TINY, batch=2, n_q=7, n_kv=7)
    assert body == 2 * (2 * 294912 * 7 + 2 * 2 * 2 * 7 * 7 * 4 * 32)
    assert F.update_flops(TINY, rows=2, prompt=3, response=4) == 3 * (body + 2 * 2 * 5 * 128 * 2048)


@pytest.mark.parametrize(
    ("name", "product"),
    [
        ("NVIDIA H200", "H200 SXM"),
        ("NVIDIA H200 NVL", "H200 NVL"),
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA A100-SXM4-40GB", "A100 40GB"),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB"),
        ("NVIDIA A100 80GB PCIe", "A100 80GB"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40", None),  # not an L4: unknown, never a wrong peak
        ("Tesla T4", None),
    ],
)
def test_device_names_find_their_peaks(name, product):
    peak = devices.peak_for(name)
    assert (peak and peak.name) == product


def test_mfu_arithmetic():
    h200 = devices.peak_for("NVIDIA H200")
    assert h200.tflops("bf16") == 989.4 and h200.tflops("fp32") == 66.9
    # Half the bf16 peak's FLOPs in one second: MFU 0.5; the same in two seconds: 0.25.
    assert devices.utilisation(989.4e12 / 2, 1.0, h200, "bf16")["mfu"] == pytest.approx(0.5)
    assert devices.utilisation(989.4e12 / 2, 2.0, h200, "bf16")["mfu"] == pytest.approx(0.25)
    assert devices.utilisation(66.9e12, 4.0, h200, "fp32")["mfu"] == pytest.approx(0.25)
    unknown = devices.utilisation(3e12, 2.0, None, "bf16")
    assert unknown["achieved_tflops"] == pytest.approx(1.5) and unknown["mfu"] is None
    assert "unknown" in unknown["mfu_note"]
    # 2.4 TB in one second on a 4.8 TB/s part: half its bandwidth.
    assert devices.bandwidth_share(2.4e12, 1.0, h200)["bandwidth_share"] == pytest.approx(0.5)
    assert devices.bandwidth_share(2.4e12, 1.0, None)["bandwidth_share"] is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answers without a CUDA device")
def test_device_option_without_cuda():
    assert devices.resolve("auto") == "cpu" and devices.resolve("cpu") == "cpu"
    with pytest.raises(devices.DeviceError, match="no CUDA device"):
        devices.resolve("cuda")
    with pytest.raises(devices.DeviceError, match="unknown device 'tpu'"):
        devices.resolve("tpu")


def test_gpu_defaults_fill_the_device_and_overrides_replace_them():
    gpu = throughput.settings_for("cuda", None, None, None)
    assert (gpu.batch, gpu.prompt, gpu.new_tokens, gpu.micro_batch) == (64, 128, 128, 16)
    small = throughput.settings_for("cpu", 4, 8, 6)
    assert (small.batch, small.prompt, small.new_tokens, small.micro_batch) == (4, 8, 6, 4)


def test_measure_on_cpu_counts_what_it_ran():
    rec = throughput.measure("tiny", device="cpu", batch=4, prompt=8, new_tokens=6)
    cfg = throughput.shape_config("tiny")
    assert rec["settings"]["device"] == "cpu" and rec["settings"]["precision"] == "fp32"
    assert rec["decoder"] == "LeanDecoder" and rec["graph_capture_s"] is None  # the CPU path is unchanged
    assert set(rec["generation"]) == {"ours", "hf_generate"}  # the eager-lean row is a CUDA comparison
    gen_flops = F.generation_flops(cfg, F.Generation(4, 8, 6))
    for cell in rec["generation"].values():
        assert cell["flops"] == gen_flops and cell["mfu"] is None and cell["peak_memory_gib"] is None
        assert len(cell["seconds"]) == 2  # the CPU's repeats, after an untimed warm-up
        median = statistics.median(cell["seconds"])
        assert cell["tokens_per_s"] == pytest.approx(4 * 6 / median)
        # 5 decode steps each read every fp32 weight but the untied input embedding (only its sampled rows).
        streamed = 4 * (F.parameter_count(cfg) - cfg.vocab_size * cfg.hidden_size)
        assert cell["achieved_tb_s"] == pytest.approx(5 * streamed / median / 1e12)
    assert rec["generation"]["hf_generate"]["vs_hf_generate"] == 1.0
    assert rec["update"]["flops"] == F.update_flops(cfg, 4, 8, 6)
    assert rec["flops"] == gen_flops + rec["update"]["flops"]
    assert rec["achieved_gflops"] == pytest.approx(rec["flops"] / rec["train_s"] / 1e9)
    assert rec["pct_of_ceiling"] is None and rec["params"] == F.parameter_count(cfg)


def test_bench_command_runs_throughput_on_cpu(tmp_path):
    results_file = tmp_path / "results.jsonl"
    command = [sys.executable, "scripts/bench.py", "throughput", "--size", "tiny", "--device", "cpu"]
    command += ["--batch", "2", "--prompt-length", "6", "--new-tokens", "4", "--results", str(results_file)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(proc.stdout)
    assert rec["workload"] == "throughput" and missing_fields(rec) == []
    assert rec["settings"]["batch"] == 2 and rec["generation"]["ours"]["tokens_per_s"] > 0
    assert json.loads(results_file.read_text().splitlines()[-1])["date"] == rec["date"]
    # The summary on stderr: one "name value" line per number, every name once.
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("throughput.", "[1/1] throughput."))]
    names = [line.removeprefix("[1/1] ").split()[0] for line in lines]
    assert len(names) == len(set(names)) and "throughput.tiny.cpu.fp32.generation.ours.tokens_per_s" in names
    assert all(len(line.removeprefix("[1/1] ").split()) == 2 for line in lines)
    assert lines == ["[1/1] " + throughput.summary_lines(rec)[0], *throughput.summary_lines(rec)[1:]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ppo", "--size", "qwen2-0.5b"], "ppo --size: tiny or small"),
        (["throughput", "--size", "small"], "throughput --size: one of tiny, qwen2-0.5b, qwen2-1.5b"),
        (["sft", "--precision", "bf16"], "--precision applies to the ppo and throughput workloads"),
        (["sft", "--batch", "4"], "apply to the throughput workload"),
        (["ppo", "--trl-no-gc"], "--trl-no-gc applies to --baseline"),
        (["ppo", "--baseline", "--precision", "bf16"], "--gradient-checkpointing goes with --precision bf16"),
        (["throughput", "--batch", "0"], "--batch must be at least 1"),
    ],
)
def test_bench_command_refuses_mismatched_options(args, message):
    proc = subprocess.run(
        [sys.executable, "scripts/bench.py", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and message in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a CUDA device")
def test_bench_command_refuses_cuda_without_one():
    proc = subprocess.run(
        [sys.executable, "scripts/bench.py", "throughput", "--device", "cuda"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --device cuda: no CUDA device is visible (torch.cuda.is_available() is False)"
    ]


def test_summary_lines_of_a_ppo_record(tmp_path, capsys):
    from rlhf.bench import summary

    rec = {
        "workload": "ppo",
        "settings": {"size": "tiny"},
        "episodes_per_s": 12.5,
        "gen_tokens_per_s": 600.0,
        "train_s": 5.12,
        "peak_rss_mb": 700.25,
    }
    padded = {
        **rec,
        "padding": {"update": {"useful_flops": 3e9, "padded_flops": 1e9, "padded_token_share": 0.25}},
        "memory_by_phase_mb": {"setup": {"hwm_mb": 400.0, "rss_mb": 390.5}},
    }
    (tmp_path / "runs.jsonl").write_text(json.dumps(rec) + "\n\n" + json.dumps(padded) + "\n")
    assert summary.main([str(tmp_path / "runs.jsonl")]) == 0
    plain = [
        "ppo.tiny.episodes_per_s 12.5",
        "ppo.tiny.gen_tokens_per_s 600",
        "ppo.tiny.train_s 5.12",
        "ppo.tiny.peak_rss_mb 700.25",
    ]
    assert capsys.readouterr().out.splitlines() == plain + plain + [
        "ppo.tiny.update.useful_flops 3e+09",
        "ppo.tiny.update.padded_flops 1e+09",
        "ppo.tiny.update.padded_token_share 0.25",
        "ppo.tiny.memory.setup.hwm_mb 400",
        "ppo.tiny.memory.setup.rss_mb 390.5",
    ]


def test_gpu_check_script_parses_and_refuses_a_machine_without_cuda(tmp_path):
    script = REPO_ROOT / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if torch.cuda.is_available():
        return
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "OUT": str(tmp_path), "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no CUDA device" in proc.stderr  # stops before any benchmark or test
    assert not (tmp_path / "gpu_check.jsonl").exists()
