#!/usr/bin/env python
"""Benchmarks our stages; ppo against TRL 1.10's PPOTrainer on the same machine (see docs/performance.md).

    python scripts/bench.py ppo --size tiny|small [--value critic|head] [--lora] [--gradient-checkpointing]
                                [--episodes 256] [--repeats N] [--arch llama|qwen2]
    python scripts/bench.py ppo --size tiny --baseline --repeats 3     # ours and TRL in alternation, ratios
                                [--precision fp32|bf16] [--trl-no-gc]      # bf16 autocast on both sides; TRL also
                                                                           # without its per-update gc.collect()
    python scripts/bench.py ppo --size small --profile [--profile-tool auto|py-spy|torch|cprofile] [--native]
    python scripts/bench.py sft --size tiny [--max-steps 30]           # sft tokens/s on the brand-voice data
    python scripts/bench.py reward --size tiny [--max-steps 30]        # reward pairs/s on the brand-voice data
    python scripts/bench.py throughput --size tiny|qwen2-0.5b|qwen2-1.5b [--device auto|cpu|cuda]
                                [--precision auto|fp32|bf16] [--batch B] [--prompt-length P] [--new-tokens N]
                                # one policy's generation (ours and HF generate) and PPO update: tokens/s, MFU,
                                # peak memory; random weights from a config, bf16 on CUDA (docs/performance.md, GPU)

--device (every workload): auto takes CUDA when present; cpu hides the GPUs from a stage; cuda fails without one.
Every measurement runs in a fresh process with 2 torch threads. stdout gets one JSON object; progress goes to stderr.
Each measured run is appended to bench/results.jsonl (--no-record to skip). Timings are meaningless while the load
average is far above the core count: the records carry it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

THROUGHPUT_SHAPES = ("tiny", "qwen2-0.5b", "qwen2-1.5b")  # rlhf.bench.throughput.SHAPES, without importing torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workload", choices=["ppo", "sft", "reward", "throughput"])
    parser.add_argument(
        "--size",
        choices=["tiny", "small", *THROUGHPUT_SHAPES[1:]],
        default="tiny",
        help="ppo / sft / reward: tiny or small; throughput: " + ", ".join(THROUGHPUT_SHAPES),
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--repeats", type=int, default=1, help="measurements (pairs with --baseline)")
    parser.add_argument("--models", help="bench model directory (default: $RLHF_CACHE/bench/models)")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (2: the reference's; others: experiments)"
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/results.jsonl")
    parser.add_argument("--results", default=None, help="results file (default: bench/results.jsonl)")
    ppo = parser.add_argument_group("ppo")
    ppo.add_argument("--value", choices=["critic", "head"], default="critic")
    ppo.add_argument("--lora", action="store_true", help="LoRA adapters on a shared base (ref = adapter off)")
    ppo.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in the backward")
    ppo.add_argument("--episodes", type=int, default=256)
    ppo.add_argument(
        "--arch", choices=["llama", "qwen2"], default="llama", help="the workload's model family (same dims, weights)"
    )
    ppo.add_argument("--baseline", action="store_true", help="alternate with TRL 1.10's PPOTrainer, print ratios")
    ppo.add_argument("--profile", action="store_true", help="profile one run instead of timing it")
    ppo.add_argument("--profile-tool", choices=["auto", "py-spy", "torch", "cprofile"], default="auto")
    ppo.add_argument("--native", action="store_true", help="py-spy: include native frames (slower sampling)")
    ppo.add_argument("--profile-dir", default=None, help="where raw profiles go (default: a temp dir)")
    hf = parser.add_argument_group("sft / reward")
    hf.add_argument("--max-steps", type=int, default=None)
    tp = parser.add_argument_group(
        "throughput (defaults: batch 64, prompt 128, 128 new tokens on CUDA; 8, 32, 32 on CPU)"
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="throughput: auto = bf16 on CUDA; ppo: auto = fp32 (the reference's), bf16 = float32 weights under bf16 "
        "autocast (training.mixed_precision: bf16), raced against the reference's --mode trl-defaults",
    )
    ppo.add_argument(
        "--trl-no-gc", action="store_true", help="--baseline: also run TRL with its gc.collect() calls patched out"
    )
    tp.add_argument("--batch", type=int, default=None, help="rows sampled together and updated on")
    tp.add_argument("--prompt-length", type=int, default=None)
    tp.add_argument("--new-tokens", type=int, default=None)
    args = parser.parse_args(argv)
    if args.workload == "throughput":
        if args.size not in THROUGHPUT_SHAPES:
            parser.error(f"throughput --size: one of {', '.join(THROUGHPUT_SHAPES)}")
    else:
        if args.size not in ("tiny", "small"):
            parser.error(f"{args.workload} --size: tiny or small")
        if args.batch or args.prompt_length or args.new_tokens:
            parser.error("--batch, --prompt-length and --new-tokens apply to the throughput workload")
        if args.precision != "auto" and args.workload != "ppo":
            parser.error("--precision applies to the ppo and throughput workloads")
        if args.trl_no_gc and not args.baseline:
            parser.error("--trl-no-gc applies to --baseline")
    for name in ("batch", "prompt_length", "new_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.device == "cuda":
        from rlhf.bench.devices import DeviceError, resolve

        try:
            resolve("cuda")
        except DeviceError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    from rlhf.bench import baseline, results
    from rlhf.bench.models import prepare

    models_root = Path(args.models).resolve() if args.models else None
    if args.workload == "throughput":
        options = {
            "shape": args.size,
            "device": args.device,
            "precision": args.precision,
            "batch": args.batch,
            "prompt": args.prompt_length,
            "new_tokens": args.new_tokens,
        }
    elif args.workload == "ppo":
        options = {
            "size": args.size,
            "value": args.value,
            "lora": args.lora,
            "episodes": args.episodes,
            "gradient_checkpointing": args.gradient_checkpointing,
            "models_root": str(models_root) if models_root else None,
            "arch": args.arch,
            "precision": "fp32" if args.precision == "auto" else args.precision,
        }
    else:
        options = {
            "size": args.size,
            "max_steps": args.max_steps,
            "models_root": str(models_root) if models_root else None,
        }
    if args.arch != "llama" and args.workload != "ppo":
        parser.error("--arch applies to the ppo workload")
    if args.workload != "throughput":
        options["device"] = args.device
    if args.threads != 2:
        if args.baseline:
            parser.error("--baseline runs both sides with the reference's 2 threads")
        options["threads"] = args.threads
    record = (
        (lambda recs: None)
        if args.no_record
        else (lambda recs: results.append(recs, Path(args.results) if args.results else results.RESULTS_FILE))
    )

    if args.profile:
        from rlhf.bench.profile import profile_ppo

        out_dir = Path(args.profile_dir or tempfile.mkdtemp(prefix="rlhf-bench-profile-"))
        report = profile_ppo(options, out_dir, tool=args.profile_tool, native=args.native)
        if isinstance(report["profile"], dict):
            from rlhf.bench.profile import format_summary

            _err(format_summary(report["profile"]))
        _err(f"raw profile: {report['raw']}")
        print(json.dumps(report))
        return 0
    if args.baseline:
        if args.workload != "ppo" or args.value != "critic" or args.lora:
            parser.error("--baseline compares ppo with a separate critic, as the reference runs it")
        if args.gradient_checkpointing != (options["precision"] == "bf16"):
            # The reference's bf16 mode is TRL's defaults, gradient checkpointing included; fp32 runs without it.
            parser.error(
                "--baseline: --gradient-checkpointing goes with --precision bf16 (the reference's TRL defaults)"
            )
        if args.episodes != 256:
            parser.error("--baseline: the reference always runs 256 episodes")
        root = prepare(args.size, models_root, args.arch)["root"]
        ours, trl, pairs = baseline.alternate(
            args.size,
            options,
            args.repeats,
            root,
            log=_err,
            keep=lambda rec: record([rec]),
            no_gc_collect=args.trl_no_gc,
        )
        print(json.dumps({"ours": ours, "trl": trl, "ratios": pairs, "median_ratios": baseline.median_ratios(pairs)}))
        return 0
    runs = []
    for rep in range(args.repeats):
        rec = baseline.run_ours(args.workload, options)
        record([rec])
        _err(f"[{rep + 1}/{args.repeats}] {_line(rec)}")
        runs.append(rec)
    print(json.dumps(runs[0] if len(runs) == 1 else {"runs": runs}))
    return 0


def _line(rec: dict) -> str:
    from rlhf.bench.baseline import summary_line

    if rec["workload"] == "throughput":
        from rlhf.bench.throughput import summary_lines

        return "\n".join(summary_lines(rec))
    if rec["workload"] == "ppo":
        return summary_line(rec)
    rate = f"{rec['tokens_per_s']:.0f} tokens/s" if "tokens_per_s" in rec else f"{rec['pairs_per_s']:.1f} pairs/s"
    return f"{rec['workload']}: {rate}, {rec['achieved_gflops']:.1f} GFLOP/s, peak RSS {rec['peak_rss_mb']:.0f} MB"


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
