"""Model FLOP estimates, with the reference script's per-token formula (`trl_ppo_baseline.py`).

Only matmuls count: 2 FLOPs per multiply-add for every weight a token passes through (embedding lookups excluded)
plus the attention products QK^T and AV. A backward pass costs twice its forward (input and weight gradients), so a
training pass is 3x a forward; with frozen base weights (LoRA) only input gradients flow, so 2x.

Two accountings of a ppo run are reported:

* executed: the passes our loop actually makes, as counted by `rlhf.bench.instrument` (which heads run on how many
  positions, how long each attention context is). Achieved FLOP/s from it says how busy the hardware was.
* trl: the reference script's formula for TRL's passes (generation, a full reference forward, a value and a reward
  forward, policy + value training) applied to the same episodes and lengths. It is the same numerator the TRL run
  reports, so its FLOP/s compares with TRL's number by ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def head_dim(cfg: Any) -> int:
    """Per-head dimension of a Llama-style config."""
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def layer_matmul_params(cfg: Any) -> int:
    """Weights one token multiplies through in the transformer layers (q, k, v, o projections and the gated MLP)."""
    h, hd = cfg.hidden_size, head_dim(cfg)
    q = h * cfg.num_attention_heads * hd
    kv = 2 * h * cfg.num_key_value_heads * hd
    o = cfg.num_attention_heads * hd * h
    mlp = 3 * h * cfg.intermediate_size
    return cfg.num_hidden_layers * (q + kv + o + mlp)


def matmul_params(cfg: Any, with_lm_head: bool) -> int:
    """The reference's `matmul_params`: layer weights plus the lm_head (V x h) or a score head (1 x h)."""
    return layer_matmul_params(cfg) + (cfg.hidden_size * cfg.vocab_size if with_lm_head else cfg.hidden_size)


def attn_flops_fwd(cfg: Any, n_q: int, n_kv: int) -> int:
    """The reference's `attn_flops_fwd`: QK^T and AV FLOPs of one sequence, n_q queries over n_kv keys."""
    return cfg.num_hidden_layers * 2 * 2 * n_q * n_kv * cfg.num_attention_heads * head_dim(cfg)


def trunk_flops(cfg: Any, batch: int, n_q: int, n_kv: int) -> int:
    """Forward FLOPs of the transformer body for `batch` rows of `n_q` new tokens attending over `n_kv` keys."""
    return batch * (2 * layer_matmul_params(cfg) * n_q + attn_flops_fwd(cfg, n_q, n_kv))


def head_flops(positions: int, in_features: int, out_features: int) -> int:
    """Forward FLOPs of an output head (lm_head or score) applied at `positions` positions."""
    return 2 * positions * in_features * out_features


@dataclass
class Generation:
    """One batched sampling call: `batch` prompts padded to `prompt` tokens, `steps` sampled tokens per row."""

    batch: int
    prompt: int
    steps: int


def generation_flops(cfg: Any, g: Generation) -> int:
    """The reference's generation FLOPs: prefill of the prompt, S-1 cached decode steps, lm_head on S positions."""
    B, Q, S = g.batch, g.prompt, g.steps
    h, V = cfg.hidden_size, cfg.vocab_size
    flops = 2 * (matmul_params(cfg, True) - h * V) * B * (Q + S - 1)
    flops += 2 * h * V * B * S
    flops += B * attn_flops_fwd(cfg, Q, Q) + B * sum(attn_flops_fwd(cfg, 1, Q + t) for t in range(1, S))
    return flops


def trl_accounting(policy_cfg: Any, value_cfg: Any, generations: list[Generation], epochs: int) -> dict[str, int]:
    """FLOPs the reference script reports for TRL's passes over these generations (one batch each).

    TRL 1.10 per batch: generation; a reference forward over prompt + response with the lm_head at every position;
    a value and a reward forward (score head at every position); `epochs` policy + value training passes (one
    minibatch), each 3x a forward.
    """
    n_pol, n_val = matmul_params(policy_cfg, True), matmul_params(value_cfg, False)
    out = {"gen": 0, "ref": 0, "rm_value": 0, "train": 0}
    for g in generations:
        B, L = g.batch, g.prompt + g.steps
        pol = B * (2 * n_pol * L + attn_flops_fwd(policy_cfg, L, L))
        val = B * (2 * n_val * L + attn_flops_fwd(value_cfg, L, L))
        out["gen"] += generation_flops(policy_cfg, g)
        out["ref"] += pol
        out["rm_value"] += 2 * val
        out["train"] += epochs * 3 * (pol + val)
    return out


def update_flops(cfg: Any, rows: int, prompt: int, response: int) -> int:
    """FLOPs of one policy training pass over `rows` sequences of `prompt + response` tokens.

    The body runs on every position, the lm_head on the `response + 1` positions whose logits the loss reads
    (`logits_to_keep`); forward plus backward is 3x the forward.
    """
    length = prompt + response
    forward = trunk_flops(cfg, rows, length, length) + head_flops(
        rows * (response + 1), cfg.hidden_size, cfg.vocab_size
    )
    return 3 * forward


def parameter_count(cfg: Any) -> int:
    """Parameters of a Llama- or Qwen2-layout causal LM from its config alone (no weights built).

    Embedding, lm_head unless tied, per layer q/k/v/o and the gated MLP with their biases (Qwen2: q/k/v always;
    Llama: `attention_bias` on q/k/v/o, `mlp_bias` on the MLP) and two RMSNorms, plus the final norm.
    """
    h, hd, heads, kv = cfg.hidden_size, head_dim(cfg), cfg.num_attention_heads, cfg.num_key_value_heads
    attention_bias = getattr(cfg, "attention_bias", False)
    qkv_bias = cfg.model_type == "qwen2" or attention_bias
    layer = layer_matmul_params(cfg) // cfg.num_hidden_layers
    layer += (heads + 2 * kv) * hd * qkv_bias + h * attention_bias
    layer += (2 * cfg.intermediate_size + h) * getattr(cfg, "mlp_bias", False)
    layer += 2 * h
    embeddings = cfg.vocab_size * h * (1 if cfg.tie_word_embeddings else 2)
    return cfg.num_hidden_layers * layer + h + embeddings
