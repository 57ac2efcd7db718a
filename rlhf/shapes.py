"""Model shapes from a transformers config.json, and the counts derived from them: parameters, LoRA parameters,
activation elements per token, KV-cache elements. Arithmetic only (no torch); used by the memory planner.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf.config import LoraConfig

LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ShapeError(ValueError):
    """A config.json without the fields a decoder-only transformer needs."""


@dataclass(frozen=True)
class ModelShape:
    """The shapes of a decoder-only transformer (Llama-style: gated MLP, RMSNorm, grouped-query attention)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tied_embeddings: bool = False
    attention_bias: bool = False

    @classmethod
    def from_config(cls, config: dict) -> ModelShape:
        """Reads a transformers config.json (Llama, Mistral, Qwen2 names; GPT-2 style names as a fallback)."""
        c = config.get("text_config") or config

        def first(*names: str, default: int | None = None) -> int:
            for name in names:
                if c.get(name) is not None:
                    return int(c[name])
            if default is None:
                raise ShapeError(f"config.json has none of {', '.join(names)}")
            return default

        hidden = first("hidden_size", "n_embd", "d_model")
        heads = first("num_attention_heads", "n_head")
        return cls(
            vocab_size=first("vocab_size"),
            hidden_size=hidden,
            intermediate_size=first("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden),
            num_layers=first("num_hidden_layers", "n_layer", "num_layers"),
            num_heads=heads,
            num_kv_heads=first("num_key_value_heads", default=heads),
            head_dim=first("head_dim", default=hidden // heads),
            tied_embeddings=bool(c.get("tie_word_embeddings", config.get("tie_word_embeddings", True))),
            attention_bias=bool(c.get("attention_bias", False)),
        )

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer."""
        h, q, kv, i = (
            self.hidden_size,
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
            self.intermediate_size,
        )
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def layer_linear_parameters(self) -> int:
        """Weights of one decoder layer's linear layers (attention and MLP projections, no biases or norms)."""
        return sum(a * b for a, b in self.module_shapes().values())

    def layer_parameters(self) -> int:
        """Parameters of one decoder layer: attention, MLP, two norms (and q/k/v biases where the model has them)."""
        linear = self.layer_linear_parameters()
        bias = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim if self.attention_bias else 0
        return linear + bias + 2 * self.hidden_size

    def parameters(self, head: str) -> int:
        """All parameters with a language-model head ('lm') or a one-logit score head ('score')."""
        out = self.vocab_size * self.hidden_size if head == "lm" and not self.tied_embeddings else 0
        score = self.hidden_size if head == "score" else 0
        embed = self.vocab_size * self.hidden_size
        return embed + self.num_layers * self.layer_parameters() + self.hidden_size + out + score

    def lora_parameters(self, lora: LoraConfig) -> int:
        """Adapter parameters: r x (in + out) for every adapted linear layer ('all-linear': all but the head)."""
        targets = LINEAR_MODULES if lora.target_modules == "all-linear" else lora.target_modules
        shapes = self.module_shapes()
        per_layer = sum(lora.r * (a + b) for name, (a, b) in shapes.items() if name in targets)
        return self.num_layers * per_layer

    def activation_elements(self, seq_len: int, checkpointing: bool = False) -> int:
        """Elements autograd keeps per token for backward in the trunk (embedding to final norm, no head).

        Per layer: the residual input, RMSNorm's normalised and scaled outputs (x2 norms: 6h), q, the attended k and
        v (after grouped-query heads are repeated), the attention output and its contiguous copy (5 x heads x
        head_dim), the log-sum-exp per head, and the MLP's gate, SiLU, up and product (4i). Plus the final norm (3h)
        and the padding mask SDPA receives ([batch, 1, seq, seq]: seq elements per token). With gradient
        checkpointing only each layer's input is kept, and one layer is recomputed at a time.
        """
        layer = 6 * self.hidden_size + 5 * self.num_heads * self.head_dim + self.num_heads + 4 * self.intermediate_size
        trunk = self.num_layers * (self.hidden_size if checkpointing else layer) + (layer if checkpointing else 0)
        return trunk + 3 * self.hidden_size + seq_len

    def activation_bytes(self, seq_len: int, checkpointing: bool, width: int, autocast: bool = False) -> int:
        """Bytes autograd keeps per token for backward in the trunk: `activation_elements` at `width` bytes each, or
        their mix under bf16 autocast over float32 weights.

        Under autocast the residual stream stays float32 (float32 embeddings plus bf16 layer outputs promote to
        float32), as do RMSNorm's saved input and normalised output (4h per layer) and the attention's log-sum-exp;
        the matrix products save bf16 tensors: q, the attended k and v, the attention output and its copy, the MLP's
        four, and each linear layer's own bf16 cast of its input (the normalised hidden state is cast once for each
        of q, k, v and once for each of gate, up: 5h). Measured with saved-tensor hooks on `embedded:small`'s
        shape: 8,232 float32 and 20,424 bf16 bytes per token and layer (this formula: 8,224 and 21,248).
        """
        if not autocast:
            return self.activation_elements(seq_len, checkpointing) * width
        h, heads = self.hidden_size, self.num_heads
        layer = (4 * h + heads) * 4 + (5 * heads * self.head_dim + 4 * self.intermediate_size + 5 * h) * 2
        trunk = self.num_layers * (h * 4 if checkpointing else layer) + (layer if checkpointing else 0)
        return trunk + (3 * h + seq_len) * 4

    def autocast_parameters(self, head: str) -> int:
        """Weights autocast casts to bf16 for a forward: every linear layer's and the head's (not the embedding)."""
        head_weights = self.vocab_size * self.hidden_size if head == "lm" else self.hidden_size
        return self.num_layers * self.layer_linear_parameters() + head_weights

    def kv_cache_elements(self, tokens: int) -> int:
        """Elements of the key/value cache for `tokens` positions: layers x 2 x kv_heads x head_dim each."""
        return tokens * self.num_layers * 2 * self.num_kv_heads * self.head_dim
