"""The lean KV-cache decoder: one loop for the Llama-layout families, configured from the model itself.

A decoder layer of every supported family is: norm -> attention -> (norm) -> residual -> norm -> gated MLP -> (norm)
-> residual. What varies is read from the model's config and modules, not from a class per family:

* projections: separate q/k/v and gate/up, or fused `qkv_proj` / `gate_up_proj` (Phi-3); biases where present;
* q/k RMSNorm on each head (Qwen3, Gemma 3) and the norms after attention and around the MLP (Gemma 2/3);
* the embedding scale of a scaled-embedding module (Gemma: sqrt(hidden), rounded to the weight dtype);
* the attention scale (`self_attn.scaling`: Gemma's `query_pre_attn_scalar`), the activation (the MLP's own),
  attention and final-logit soft capping (Gemma 2), sliding windows per layer, and rotary tables from the model's own
  rotary module (one per layer type for Gemma 3; partial rotary dims for Phi-3; linear, llama3 and yarn scaling).

The one trait neither says is the RMSNorm form, so `FAMILIES` records it with the model type, the exact class whose
forward is reproduced, and which layers `sliding_window` applies to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from rlhf.ppo.models import base_model_of, trunk_of

# Rotary variants whose tables depend on the position alone, so one table serves the whole rollout ("dynamic" and
# "longrope" switch frequencies with the sequence length).
_STATIC_ROPE = {"default", "linear", "llama3", "yarn"}


@dataclass(frozen=True)
class Family:
    """What a model type's config and modules do not say about its maths.

    Attributes:
        causal_lm: The `transformers` class whose forward is reproduced (exactly: a subclass may change the maths).
        offset_norm: RMSNorm computes `(x_hat * (1 + w)).to(dtype)` in fp32 (Gemma), not `w * x_hat.to(dtype)`.
        windows: The layers `config.sliding_window` applies to: "layer_types" (those marked "sliding_attention"),
            "all" (Mistral, Phi-3: every layer when set) or "none".
    """

    causal_lm: str
    offset_norm: bool = False
    windows: str = "none"


FAMILIES: dict[str, Family] = {
    "llama": Family("LlamaForCausalLM"),
    "mistral": Family("MistralForCausalLM", windows="all"),
    "qwen2": Family("Qwen2ForCausalLM", windows="layer_types"),
    "qwen3": Family("Qwen3ForCausalLM", windows="layer_types"),
    "gemma": Family("GemmaForCausalLM", offset_norm=True),
    "gemma2": Family("Gemma2ForCausalLM", offset_norm=True, windows="layer_types"),
    "gemma3_text": Family("Gemma3ForCausalLM", offset_norm=True, windows="layer_types"),
    "phi3": Family("Phi3ForCausalLM", windows="all"),
}


def unsupported(model: nn.Module) -> str | None:
    """Why `LeanDecoder` cannot run this model exactly (None when it can)."""
    import transformers

    base = base_model_of(model)
    config = base.config
    model_type = getattr(config, "model_type", None)
    family = FAMILIES.get(model_type)
    if family is None:
        return f"no lean decoder for model_type {model_type!r}; it covers {', '.join(sorted(FAMILIES))}"
    if type(base) is not getattr(transformers, family.causal_lm):
        return f"{type(base).__name__} is not {family.causal_lm}"
    if getattr(config, "pretraining_tp", 1) != 1:
        return f"pretraining_tp={config.pretraining_tp}"
    if getattr(config, "use_bidirectional_attention", False):
        return "bidirectional attention"
    for rope_type in _rope_types(config):
        if rope_type not in _STATIC_ROPE:
            return f"rope_type={rope_type}"
    if any(getattr(p, "ds_id", None) is not None and p.ds_status.name != "AVAILABLE" for p in base.parameters()):
        # ZeRO-3 shards outside `gathered_weights`: only the model's own forward fetches them (through its hooks).
        return "ZeRO-3 partitioned weights"
    body = trunk_of(base)
    embed = body.embed_tokens
    if not isinstance(embed, nn.Embedding) or (type(embed) is not nn.Embedding and not hasattr(embed, "embed_scale")):
        return f"embed_tokens is {type(embed).__name__}"
    norms = {"norm": body.norm}
    linears = {"lm_head": base.lm_head}
    for i, layer in enumerate(body.layers):
        norms.update({f"layers.{i}.{name}": module for name, module in _norms(layer).items() if module is not None})
        linears.update({f"layers.{i}.{name}": module for name, module in _projections(layer).items()})
    for name, module in norms.items():
        if hasattr(module, "original_module") or not isinstance(getattr(module, "weight", None), nn.Parameter):
            return f"{name} is {type(module).__name__}"
    for name, module in linears.items():
        if isinstance(module, nn.Linear) and not hasattr(module, "base_layer"):
            continue
        reason = _lora_unsupported(module)
        if reason:
            return f"{name}: {reason}"
    return None


@dataclass(slots=True)
class _Layer:
    """One decoder layer's effective weights ((weight, bias) per projection; None where the family has no such part)."""

    attn_in: torch.Tensor
    mlp_in: torch.Tensor
    attn_out: torch.Tensor | None
    mlp_out: torch.Tensor | None
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    qkv: tuple | None
    q: tuple | None
    k: tuple | None
    v: tuple | None
    o: tuple
    gate_up: tuple | None
    gate: tuple | None
    up: tuple | None
    down: tuple
    act: object
    window: int | None
    rope: str | None


class LeanDecoder:
    """KV-cache decoding for the families in `FAMILIES` over the model's current weights.

    The weights are looked up at construction (once per rollout; LoRA layers' effective weights are computed then),
    so they must not change while the decoder is in use. Under ZeRO-3 construct it inside `gathered_weights`.
    """

    def __init__(self, model: nn.Module, batch: int, capacity: int):
        base = base_model_of(model)
        config, body = base.config, trunk_of(base)
        family = FAMILIES[config.model_type]
        self.config = config
        attention = body.layers[0].self_attn
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = attention.head_dim
        self.qkv_split = [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim]
        self.scaling = attention.scaling
        self.attn_softcap = getattr(config, "attn_logit_softcapping", None)
        self.final_softcap = getattr(config, "final_logit_softcapping", None)
        self.eps = config.rms_norm_eps
        self.offset_norm = family.offset_norm
        self._norm = _offset_rms_norm if family.offset_norm else _rms_norm
        self.embed = body.embed_tokens.weight
        scale = getattr(body.embed_tokens, "embed_scale", None)
        self.embed_scale = None if scale is None else scale.to(self.embed.dtype)
        self.norm = self._norm_weight(body.norm)
        self.head = _linear(base.lm_head)
        windows = _windows(config, family)
        kinds = _rope_kinds(config)
        self.layers = [self._layer(layer, windows[i], kinds[i]) for i, layer in enumerate(body.layers)]
        self.windows = sorted({w for w in windows if w is not None})
        param = self.embed
        self.k_cache = [param.new_empty((batch, self.kv_heads, capacity, self.head_dim)) for _ in self.layers]
        self.v_cache = [param.new_empty((batch, self.kv_heads, capacity, self.head_dim)) for _ in self.layers]
        # cos/sin for every position the rollout can reach, from the model's own rotary module (one table per kind).
        probe = param.new_empty((1, capacity, self.head_dim))
        positions = torch.arange(capacity, device=param.device)[None]
        self.rope = {}
        for kind in set(kinds):
            cos, sin = body.rotary_emb(probe, positions) if kind is None else body.rotary_emb(probe, positions, kind)
            self.rope[kind] = (cos[0], sin[0])  # [capacity, rotary dims]
        self.valid = torch.zeros((batch, capacity), dtype=torch.bool, device=param.device)
        self.length = 0

    def _norm_weight(self, module: nn.Module) -> torch.Tensor:
        # Gemma's (1 + w) in fp32 is computed once per rollout rather than at every step.
        return 1.0 + module.weight.float() if self.offset_norm else module.weight

    def _layer(self, layer: nn.Module, window: int | None, rope: str | None) -> _Layer:
        norms = {name: None if m is None else self._norm_weight(m) for name, m in _norms(layer).items()}
        linears = {name.split(".")[-1]: _linear(m) for name, m in _projections(layer).items()}
        # Gemma 2/3 norm the attention output with `post_attention_layernorm` and the MLP input with a norm of its
        # own; elsewhere `post_attention_layernorm` is the MLP's input norm.
        sandwich = norms["pre_feedforward_layernorm"] is not None
        return _Layer(
            attn_in=norms["input_layernorm"],
            mlp_in=norms["pre_feedforward_layernorm"] if sandwich else norms["post_attention_layernorm"],
            attn_out=norms["post_attention_layernorm"] if sandwich else None,
            mlp_out=norms["post_feedforward_layernorm"],
            q_norm=norms["self_attn.q_norm"],
            k_norm=norms["self_attn.k_norm"],
            qkv=linears.get("qkv_proj"),
            q=linears.get("q_proj"),
            k=linears.get("k_proj"),
            v=linears.get("v_proj"),
            o=linears["o_proj"],
            gate_up=linears.get("gate_up_proj"),
            gate=linears.get("gate_proj"),
            up=linears.get("up_proj"),
            down=linears["down_proj"],
            act=_activation(layer.mlp),
            window=window,
            rope=rope,
        )

    def prefill(self, query: torch.Tensor, query_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Runs the prompt; returns logits [B, V] predicting the first response token."""
        width = query.shape[1]
        self.valid[:, :width] = query_mask.bool()
        self.length = 0
        causal = torch.ones((width, width), dtype=torch.bool, device=query.device).tril()
        # Padding rows attend to themselves only, so no row is fully masked (which would give NaN).
        eye = torch.eye(width, dtype=torch.bool, device=query.device)
        mask = (causal & self.valid[:, None, :width]) | eye
        return self._forward(query, position_ids, mask[:, None])

    def step(self, tokens: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Appends one token per row; returns logits [B, V] predicting the next."""
        self.valid[:, self.length] = True
        return self._forward(tokens[:, None], position_ids, self.valid[:, None, None, : self.length + 1])

    def _forward(self, ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Appends `ids` [B, T] (`mask` [B, 1, T, end]: which cached keys each new token sees) and returns logits."""
        batch, new = ids.shape
        start, end = self.length, self.length + new
        rope = {
            kind: (cos[position_ids][:, None], sin[position_ids][:, None]) for kind, (cos, sin) in self.rope.items()
        }
        windowed = {w: _window_mask(mask, start, end, w) for w in self.windows}
        norm, eps = self._norm, self.eps
        hidden = F.embedding(ids, self.embed)
        if self.embed_scale is not None:
            hidden = hidden * self.embed_scale
        for i, layer in enumerate(self.layers):
            x = norm(hidden, layer.attn_in, eps)
            if layer.qkv is not None:
                q, k, v = F.linear(x, *layer.qkv).split(self.qkv_split, dim=-1)
            else:
                q, k, v = F.linear(x, *layer.q), F.linear(x, *layer.k), F.linear(x, *layer.v)
            q = q.view(batch, new, self.heads, self.head_dim)
            k = k.view(batch, new, self.kv_heads, self.head_dim)
            if layer.q_norm is not None:
                q, k = norm(q, layer.q_norm, eps), norm(k, layer.k_norm, eps)
            cos, sin = rope[layer.rope]
            self.k_cache[i][:, :, start:end] = _rope(k.transpose(1, 2), cos, sin)
            self.v_cache[i][:, :, start:end] = v.view(batch, new, self.kv_heads, self.head_dim).transpose(1, 2)
            first, attn_mask = (0, mask) if layer.window is None else windowed[layer.window]
            attn = self._attend(
                _rope(q.transpose(1, 2), cos, sin),
                self.k_cache[i][:, :, first:end],
                self.v_cache[i][:, :, first:end],
                attn_mask,
            )
            attn = F.linear(attn.transpose(1, 2).reshape(batch, new, -1), *layer.o)
            if layer.attn_out is not None:
                attn = norm(attn, layer.attn_out, eps)
            hidden = hidden + attn
            x = norm(hidden, layer.mlp_in, eps)
            if layer.gate_up is not None:
                gate, up = F.linear(x, *layer.gate_up).chunk(2, dim=-1)
            else:
                gate, up = F.linear(x, *layer.gate), F.linear(x, *layer.up)
            out = F.linear(layer.act(gate) * up, *layer.down)
            if layer.mlp_out is not None:
                out = norm(out, layer.mlp_out, eps)
            hidden = hidden + out
        self.length = end
        logits = F.linear(norm(hidden[:, -1], self.norm, eps), *self.head)
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.attn_softcap is None:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=self.scaling, enable_gqa=self.kv_heads != self.heads
            )
        # Soft capping acts on the scores between the product and the softmax, which SDPA does not expose.
        groups = self.heads // self.kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling
        scores = torch.tanh(scores / self.attn_softcap) * self.attn_softcap
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return torch.matmul(scores.softmax(-1, dtype=torch.float32).to(q.dtype), v)


def _window_mask(mask: torch.Tensor, start: int, end: int, window: int) -> tuple[int, torch.Tensor]:
    """(first key index, mask from it) for a sliding window: query i sees keys j with i - window < j <= i."""
    first = max(0, start - window + 1)
    mask = mask[..., first:end]
    if end - start > 1:  # a single new token sees exactly the window kept; a prompt needs the band
        query = torch.arange(start, end, device=mask.device)[:, None]
        key = torch.arange(first, end, device=mask.device)[None]
        mask = mask & (query - key < window)
    return first, mask


def _windows(config, family: Family) -> list[int | None]:
    """The sliding window of each layer (None: full attention), as the model's own mask construction applies it."""
    window = getattr(config, "sliding_window", None)
    layers = config.num_hidden_layers
    if window is None or family.windows == "none":
        return [None] * layers
    if family.windows == "all":
        return [window] * layers
    return [window if kind == "sliding_attention" else None for kind in config.layer_types]


def _rope_kinds(config) -> list[str | None]:
    """Which rotary table each layer uses: its layer type where the config has one per type (Gemma 3), else None."""
    layer_types = getattr(config, "layer_types", None)
    per_type = layer_types and all(kind in config.rope_parameters for kind in layer_types)
    return list(layer_types) if per_type else [None] * config.num_hidden_layers


def _rope_types(config) -> list[str]:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    tables = [rope[kind] for kind in set(_rope_kinds(config)) if kind is not None] or [rope]
    return [(t or {}).get("rope_type", (t or {}).get("type", "default")) for t in tables]


def _norms(layer: nn.Module) -> dict[str, nn.Module | None]:
    """A decoder layer's RMSNorm modules by name (None where the family has no such norm)."""
    names = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm")
    norms = {name: getattr(layer, name, None) for name in names}
    norms.update({f"self_attn.{name}": getattr(layer.self_attn, name, None) for name in ("q_norm", "k_norm")})
    return norms


def _projections(layer: nn.Module) -> dict[str, nn.Module]:
    """A decoder layer's linear layers by name (fused q|k|v and gate|up where the family fuses them)."""
    attn, mlp = layer.self_attn, layer.mlp
    names = ["self_attn.qkv_proj"] if hasattr(attn, "qkv_proj") else [f"self_attn.{p}_proj" for p in "qkv"]
    names += ["self_attn.o_proj"]
    names += ["mlp.gate_up_proj"] if hasattr(mlp, "gate_up_proj") else ["mlp.gate_proj", "mlp.up_proj"]
    names += ["mlp.down_proj"]
    return {name: layer.get_submodule(name) for name in names}


def _activation(mlp: nn.Module):
    from transformers.activations import SiLUActivation

    act = getattr(mlp, "act_fn", None) or mlp.activation_fn
    return F.silu if isinstance(act, (SiLUActivation, nn.SiLU)) else act  # the plain function skips a module call


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # As LlamaRMSNorm: normalised in fp32, scaled by the weight in the input dtype (one fused op for the statistics).
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def _offset_rms_norm(x: torch.Tensor, offset_weight: torch.Tensor, eps: float) -> torch.Tensor:
    # As GemmaRMSNorm: scaled by (1 + w) in fp32, then cast (`offset_weight` is 1 + w, in fp32).
    return (F.rms_norm(x.float(), (x.shape[-1],), eps=eps) * offset_weight).to(x.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    rotary = cos.shape[-1]
    if rotary < x.shape[-1]:  # partial rotary (Phi-3's partial_rotary_factor): the rest passes through
        return torch.cat((_rope(x[..., :rotary], cos, sin), x[..., rotary:]), dim=-1)
    half = rotary // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _lora_unsupported(module: nn.Module) -> str | None:
    """Why a PEFT-wrapped layer cannot be folded into one weight (None when it can)."""
    from peft.tuners.lora import Linear as LoraLinear

    if not isinstance(module, LoraLinear):
        return f"{type(module).__name__} adapter"
    if any(module.use_dora.get(name, False) for name in module.active_adapters):
        return "DoRA adapter"
    if any(getattr(module, "lora_bias", {}).get(name, False) for name in module.active_adapters):
        return "LoRA bias"
    return None


@torch.no_grad()
def _linear(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight [out, in], bias) that `module` applies: a plain Linear's, or a LoRA layer's base plus active deltas."""
    if isinstance(module, nn.Linear) and not hasattr(module, "base_layer"):
        return module.weight, module.bias
    base = module.base_layer
    weight = base.weight
    if not module.disable_adapters and not module.merged:
        for name in module.active_adapters:
            if name in module.lora_A:
                weight = weight + module.get_delta_weight(name).to(weight.dtype)
    return weight, base.bias
