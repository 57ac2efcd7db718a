"""The throughput workload: a policy's rollout generation and PPO update, tokens/s, MFU and peak memory, CPU or CUDA.

The model is built from a config with random weights, on the device, so nothing is downloaded and nothing is saved:

* `tiny`: embedded:tiny's dimensions (Llama layout, vocabulary 2,048): the harness on any machine in seconds.
* `qwen2-0.5b`, `qwen2-1.5b`: Qwen2-0.5B's and Qwen2-1.5B's published dimensions (hidden 896 / 1,536, 24 / 28
  layers, 14 / 12 query heads, 2 key/value heads, MLP 4,864 / 8,960, vocabulary 151,936, tied embeddings; 494 M and
  1.54 B parameters). The rotary base and context length are left at the defaults: they do not change the cost.

Two phases, each timed `repeats` times after one untimed warm-up, median reported:

* generation: `rlhf.generation.sampling.sample` (the rollout sampler; on CUDA the lean maths as `GraphDecoder`,
  CUDA-graph steps, the capture paid inside every call as in a rollout) and, on the same prompts and settings, HF
  `generate` (its default dynamic cache), plus on CUDA the lean decoder without graphs. Every row samples exactly
  `new_tokens` tokens (no EOS ends a row early), at temperature 0.7, no top-k / top-p.
* update: one PPO policy step over the sampled sequences: forward (`response_logits`), log-probs, the clipped
  surrogate (`rlhf.ppo.functional.policy_loss`), backward in micro-batches, gradient clipping, AdamW (fused).

bf16 weights on CUDA by default (fp32 on the CPU). FLOPs are `rlhf.bench.flops`' formulas (`generation_flops`,
`update_flops`); MFU and the bandwidth share are against `rlhf.bench.devices`' table. Peak memory is
`torch.cuda.max_memory_allocated` per phase on CUDA, peak RSS of the process on the CPU.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from rlhf.bench import devices
from rlhf.bench import flops as F
from rlhf.bench.probe import peak_rss_mb

VOCAB_TINY = 2048  # embedded:tiny's tokenizer size (rlhf.models.embedded.VOCAB_SIZE)
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny": (
        "llama",
        dict(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=VOCAB_TINY,
            tie_word_embeddings=False,
        ),
    ),
    "qwen2-0.5b": (
        "qwen2",
        dict(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            vocab_size=151936,
            tie_word_embeddings=True,
            rms_norm_eps=1e-6,
        ),
    ),
    "qwen2-1.5b": (
        "qwen2",
        dict(
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            vocab_size=151936,
            tie_word_embeddings=True,
            rms_norm_eps=1e-6,
        ),
    ),
}
# The parameter counts the model cards publish (Qwen/Qwen2-0.5B: 0.49 B, Qwen/Qwen2-1.5B: 1.54 B), exactly.
PUBLISHED_PARAMS = {"qwen2-0.5b": 494_032_768, "qwen2-1.5b": 1_543_714_304}
PRECISIONS = ("auto", "fp32", "bf16")
PAD_ID = 0
SEED = 0


@dataclass(frozen=True)
class Settings:
    """One throughput measurement's sizes.

    Attributes:
        batch: Rows sampled together (and updated on).
        prompt: Prompt width; rows' prompts are 1/2 to all of it, left-padded.
        new_tokens: Tokens sampled per row.
        micro_batch: Rows per forward/backward in the update (gradients accumulated over the batch).
        repeats: Timed calls per measurement (after one warm-up).
        temperature: Sampling temperature.
    """

    batch: int
    prompt: int
    new_tokens: int
    micro_batch: int
    repeats: int
    temperature: float = 0.7


# A GPU rollout batch fills the device; the CPU one is what the CPU ppo workloads run.
DEFAULT_SETTINGS = {
    "cuda": Settings(batch=64, prompt=128, new_tokens=128, micro_batch=16, repeats=3),
    "cpu": Settings(batch=8, prompt=32, new_tokens=32, micro_batch=8, repeats=2),
}


def shape_config(shape: str):
    """The `transformers` config of a benchmark shape (Llama or Qwen2)."""
    from transformers import LlamaConfig, Qwen2Config

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    family, dims = SHAPES[shape]
    cls = LlamaConfig if family == "llama" else Qwen2Config
    return cls(max_position_embeddings=4096, pad_token_id=PAD_ID, bos_token_id=1, eos_token_id=2, **dims)


def build_model(shape: str, device: str, dtype):
    """The shape's causal LM with seeded random weights, initialised directly on `device`, cast to `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM

    config = shape_config(shape)
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []):
        torch.manual_seed(SEED)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config)
    return model.to(dtype)


def settings_for(device: str, batch: int | None, prompt: int | None, new_tokens: int | None) -> Settings:
    """The device's default sizes with the given ones replacing them (the micro-batch never exceeds the batch)."""
    base = DEFAULT_SETTINGS[device]
    batch = batch or base.batch
    return Settings(
        batch=batch,
        prompt=prompt or base.prompt,
        new_tokens=new_tokens or base.new_tokens,
        micro_batch=min(base.micro_batch, batch),
        repeats=base.repeats,
        temperature=base.temperature,
    )


def measure(
    shape: str,
    device: str = "auto",
    precision: str = "auto",
    batch: int | None = None,
    prompt: int | None = None,
    new_tokens: int | None = None,
) -> dict:
    """Measures generation and update throughput of `shape` on `device`; returns the record's measures."""
    import torch

    device = devices.resolve(device)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    precision = ("bf16" if device == "cuda" else "fp32") if precision == "auto" else precision
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    settings = settings_for(device, batch, prompt, new_tokens)
    info = devices.describe(device)
    peak = devices.peak_for(info["name"]) if device == "cuda" else None

    model = build_model(shape, device, dtype)
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    query, query_mask = prompts(settings, cfg.vocab_size, device)

    generation, response = {}, None
    gen_flops = F.generation_flops(cfg, F.Generation(settings.batch, settings.prompt, settings.new_tokens))
    # Each decoding step reads every weight once, except an untied input embedding (only the sampled rows).
    streamed = params - (0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size)
    weight_bytes = streamed * torch.finfo(dtype).bits // 8
    # On CUDA "ours" is the CUDA-graph decoder (opt-in as rollout.decoder: static until this benchmark has run on a GPU).
    ours = "static" if device == "cuda" else "auto"
    runners = {"ours": _sampler(model, query, query_mask, settings, ours)}
    if device == "cuda":
        runners["lean_eager"] = _sampler(model, query, query_mask, settings, "lean")
    runners["hf_generate"] = _hf_generate(model, query, query_mask, settings)
    for name, run in runners.items():
        seconds, peak_mem, out = _timed(run, settings.repeats, device)
        if out.shape != (settings.batch, settings.new_tokens):
            raise RuntimeError(f"{name} sampled {tuple(out.shape)}, expected {(settings.batch, settings.new_tokens)}")
        median = statistics.median(seconds)
        generation[name] = {
            "seconds": seconds,
            "tokens_per_s": settings.batch * settings.new_tokens / median,
            "flops": gen_flops,
            **devices.utilisation(gen_flops, median, peak, precision),
            # The decode steps' weight reads (the prefill's are left out).
            **devices.bandwidth_share(weight_bytes * (settings.new_tokens - 1), median, peak),
            "peak_memory_gib": peak_mem,
        }
        if name == "ours":
            response = out
    for name in generation:
        generation[name]["vs_hf_generate"] = (
            generation[name]["tokens_per_s"] / generation["hf_generate"]["tokens_per_s"]
        )
    decoder = _decoder_name(model, settings, ours)
    capture_s = _capture_seconds(model, query, query_mask, settings) if decoder == "GraphDecoder" else None

    update = _update(model, query, query_mask, response, settings, device, precision, peak)
    total_s = statistics.median(generation["ours"]["seconds"]) + statistics.median(update["seconds"])
    total_flops = gen_flops + update["flops"]
    overall = devices.utilisation(total_flops, total_s, peak, precision)
    return {
        "settings": {**asdict(settings), "shape": shape, "precision": precision, "device": device},
        "device": info,
        "params": params,
        "decoder": decoder,
        "graph_capture_s": capture_s,
        "generation": generation,
        "update": update,
        # The fields every record has (rlhf.bench.results): ours generation + update, medians.
        "train_s": total_s,
        "flops": total_flops,
        "achieved_gflops": total_flops / total_s / 1e9,
        "pct_of_ceiling": None if overall["mfu"] is None else 100 * overall["mfu"],
        "matmul_ceiling_gflops": None if peak is None else {"peak": 1e3 * peak.tflops(precision)},
        "peak_rss_mb": peak_rss_mb(),
    }


def prompts(settings: Settings, vocab: int, device: str):
    """Seeded random prompts (ids 3..vocab), row lengths from half the width to all of it, left-padded."""
    import torch

    from rlhf.generation.sampling import left_pad

    generator = torch.Generator().manual_seed(SEED)
    lengths = torch.randint(settings.prompt // 2, settings.prompt + 1, (settings.batch,), generator=generator)
    lengths[0] = settings.prompt
    rows = [torch.randint(3, vocab, (int(n),), generator=generator).tolist() for n in lengths]
    query, mask = left_pad(rows, PAD_ID)
    return query.to(device), mask.to(device)


def summary_lines(rec: dict) -> list[str]:
    """One `name value` line per number of a throughput record (what scripts/gpu_check.sh prints)."""
    s = rec["settings"]
    prefix = f"throughput.{s['shape']}.{s['device']}.{s['precision']}"
    lines = [f"{prefix}.params {rec['params']}", f"{prefix}.decoder {rec['decoder']}"]
    if rec["graph_capture_s"] is not None:
        lines.append(f"{prefix}.graph_capture_s {rec['graph_capture_s']:.4f}")
    keys = ("tokens_per_s", "vs_hf_generate", "achieved_tflops", "mfu", "achieved_tb_s", "bandwidth_share")
    gpu = s["device"] == "cuda"
    for name, cell in rec["generation"].items():
        lines += [f"{prefix}.generation.{name}.{k} {_fmt(cell[k])}" for k in keys]
        if gpu:
            lines.append(f"{prefix}.generation.{name}.peak_memory_gib {_fmt(cell['peak_memory_gib'])}")
    lines += [f"{prefix}.update.{k} {_fmt(rec['update'][k])}" for k in ("tokens_per_s", "achieved_tflops", "mfu")]
    if gpu:
        lines.append(f"{prefix}.update.peak_memory_gib {_fmt(rec['update']['peak_memory_gib'])}")
    else:
        lines.append(f"{prefix}.peak_rss_mb {_fmt(rec['peak_rss_mb'])}")
    return lines


def _fmt(value) -> str:
    return "unknown" if value is None else f"{value:.6g}"


def _sampler(model, query, query_mask, settings: Settings, decoder: str):
    import torch

    from rlhf.generation.sampling import sample

    def run():
        generator = torch.Generator(device=query.device).manual_seed(SEED)
        # eos_id -1 never matches a token: every row samples exactly new_tokens, as HF generate's min_new_tokens.
        return sample(
            model,
            query,
            query_mask,
            max_new_tokens=settings.new_tokens,
            temperature=settings.temperature,
            top_k=0,
            top_p=1.0,
            eos_id=-1,
            pad_id=PAD_ID,
            generator=generator,
            decoder=decoder,
        )

    return run


def _hf_generate(model, query, query_mask, settings: Settings):
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(
        do_sample=True,
        temperature=settings.temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=settings.new_tokens,
        min_new_tokens=settings.new_tokens,
        pad_token_id=PAD_ID,
        eos_token_id=model.config.eos_token_id,
    )

    def run():
        torch.manual_seed(SEED)
        out = model.generate(input_ids=query, attention_mask=query_mask, generation_config=config)
        return out[:, query.shape[1] :]

    return run


def _timed(run, repeats: int, device: str) -> tuple[list[float], float | None, Any]:
    """(seconds of each timed call, peak GPU memory GiB over them or None off CUDA, the last call's output)."""
    import torch

    with torch.no_grad():
        run()  # warm-up: kernels, allocator, cuBLAS handles
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            out = run()
            if device == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return seconds, peak, out


def _decoder_name(model, settings: Settings, kind: str) -> str:
    from rlhf.generation.decoding import make_decoder

    return type(make_decoder(model, 1, settings.prompt + settings.new_tokens, kind)).__name__


def _capture_seconds(model, query, query_mask, settings: Settings) -> float:
    """Warm-up plus capture of one CUDA graph at the benchmark's sizes (paid once per rollout)."""
    import torch

    from rlhf.generation.decoding import GraphDecoder
    from rlhf.generation.sampling import positions

    decoder = GraphDecoder(model, settings.batch, settings.prompt + settings.new_tokens)
    position_ids = positions(query_mask)
    with torch.no_grad():
        logits = decoder.prefill(query, query_mask, position_ids)
        decoder.step(logits.argmax(-1), position_ids[:, -1:] + 1)
    return decoder.capture_s


def _update(model, query, query_mask, response, settings: Settings, device: str, precision: str, peak) -> dict:
    """One PPO policy step over the sampled batch (micro-batches accumulated, one AdamW step), timed and counted."""
    import torch

    from rlhf.generation.sampling import positions
    from rlhf.ppo.functional import logprobs_from_logits, policy_loss
    from rlhf.ppo.models import response_logits

    ids = torch.cat([query, response], dim=1)
    mask = torch.cat([query_mask, torch.ones_like(response)], dim=1)
    pos = positions(mask)
    rmask = torch.ones_like(response, dtype=torch.float32)
    n = settings.new_tokens
    generator = torch.Generator(device=device).manual_seed(SEED)
    advantages = torch.randn(response.shape, generator=generator, device=device)
    micro = [slice(i, i + settings.micro_batch) for i in range(0, settings.batch, settings.micro_batch)]

    def logprobs(rows: slice) -> torch.Tensor:
        logits = response_logits(model, ids[rows], mask[rows], pos[rows], n)
        return logprobs_from_logits(logits, response[rows], settings.temperature)

    with torch.no_grad():  # the sampler's log-probs, as a rollout keeps them
        old = torch.cat([logprobs(rows) for rows in micro])
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    tokens = rmask.sum()

    def step():
        for rows in micro:
            loss, _ = policy_loss(logprobs(rows), old[rows], advantages[rows], rmask[rows], 0.2, token_count=tokens)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def run():
        with torch.enable_grad():
            step()
        return response

    seconds, peak_mem, _ = _timed(run, settings.repeats, device)
    model.eval()
    median = statistics.median(seconds)
    flops = F.update_flops(model.config, settings.batch, settings.prompt, n)
    return {
        "seconds": seconds,
        "tokens_per_s": settings.batch * (settings.prompt + n) / median,
        "flops": flops,
        **devices.utilisation(flops, median, peak, precision),
        "peak_memory_gib": peak_mem,
    }
