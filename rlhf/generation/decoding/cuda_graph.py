"""The GPU decode path: the lean decoder's maths over a static KV cache, each token's step replayed from a CUDA graph.

On a GPU a decoding step at rollout batch sizes is bound by launching kernels, not by arithmetic: the lean loop
(`rlhf.generation.decoding.lean`) launches some ten kernels per layer from Python, and each launch costs more than the
kernel runs. A CUDA graph records one step's kernels once and replays them with a single launch. A graph replays fixed
shapes and addresses, which the lean step does not have (it slices the cache up to the current length, a Python
int), so the step here works on the whole cache instead:

* the new token's keys and values are written at a slot held in a device tensor (`index_copy_`), not by slicing;
* attention always spans the full capacity, with a [B, capacity] validity mask (prompt padding and not-yet-written
  slots off; the sliding window, where a layer has one, as a comparison against that slot);
* token ids, position ids and the slot live in static buffers that `step` fills before each replay.

The prefill (one call per rollout, variable width) stays eager and is the lean decoder's own. The graph is captured
at the first `step` of each decoder (the weights are the model's own tensors, looked up once per rollout, so a
decoder never outlives a weight update), after a few eager warm-up runs of the same step. Running one step several
times at the same slot rewrites the same keys and values, so warm-up and capture leave the cache as one step would.

Without CUDA (or with `graphs=False`) the same static step runs eagerly: that is how the CPU tests check its maths
against the lean decoder, token for token in float32. On CUDA in bfloat16 the two differ in the last bits (attention
over the full capacity sums in another order), so equality is not expected there; the GPU tests compare logits with
a tolerance instead.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn
from torch.nn import functional as F

from rlhf.generation.decoding.lean import LeanDecoder, _rope

logger = logging.getLogger("rlhf")

# Eager runs of the step before capture (the CUDA documentation's pattern: kernels pick their algorithms and the
# caching allocator settles on a side stream first).
WARMUP_STEPS = 2


class GraphDecoder:
    """Static-cache decoding for the models `LeanDecoder` runs, with the per-token step as a CUDA graph on CUDA.

    Attributes:
        graphs: Whether steps replay a captured CUDA graph (True by default on a CUDA device).
        capture_s: Seconds spent in warm-up and capture (0 until the first step; stays 0 without graphs).
    """

    def __init__(self, model: nn.Module, batch: int, capacity: int, graphs: bool | None = None):
        self.lean = LeanDecoder(model, batch, capacity)
        lean = self.lean
        device = lean.embed.device
        # Attention spans every slot: unwritten ones must hold finite values (a masked NaN still poisons the
        # weighted sum), and `new_empty` memory can hold anything.
        for cache in lean.k_cache + lean.v_cache:
            cache.zero_()
        self.capacity = capacity
        self.graphs = device.type == "cuda" if graphs is None else graphs
        if self.graphs and device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device; the model is on {device}")
        self.slots = torch.arange(capacity, device=device)
        self.tokens = torch.zeros(batch, dtype=torch.long, device=device)
        self.position_ids = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.index = torch.zeros(1, dtype=torch.long, device=device)
        self.graph = None
        self.logits = None
        self.capture_s = 0.0
        self.length = 0

    @property
    def config(self):
        """The model's config (as `LeanDecoder.config`)."""
        return self.lean.config

    def prefill(self, query: torch.Tensor, query_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Runs the prompt (eagerly, as the lean decoder); returns logits [B, V] predicting the first response token."""
        logits = self.lean.prefill(query, query_mask, position_ids)
        self.length = self.lean.length
        return logits

    def step(self, tokens: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Appends one token per row; returns logits [B, V] predicting the next."""
        if self.length >= self.capacity:
            raise ValueError(f"the KV cache holds {self.capacity} positions; all are used")
        self.tokens.copy_(tokens)
        self.position_ids.copy_(position_ids)
        self.index.fill_(self.length)
        if not self.graphs:
            logits = self._step()
        else:
            if self.graph is None:
                self._capture()
            if self.graph is None:  # capture failed: eager from here on (logged once)
                logits = self._step()
            else:
                self.graph.replay()
                logits = self.logits.clone()  # the graph's output buffer is overwritten by the next replay
        self.length += 1
        self.lean.length = self.length
        return logits

    def _capture(self) -> None:
        started = time.perf_counter()
        # Under a caller's autocast, its cache of cast weights would be freed when that context exits while the
        # graph still reads them: the same autocast, uncached, puts the casts inside the graph instead.
        autocast = torch.autocast(
            "cuda",
            enabled=torch.is_autocast_enabled("cuda"),
            dtype=torch.get_autocast_dtype("cuda"),
            cache_enabled=False,
        )
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), autocast:
            for _ in range(WARMUP_STEPS):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph), autocast:
                self.logits = self._step()
        except RuntimeError as error:
            # An op this torch build cannot capture: the same step eagerly is still exact, only slower.
            torch.cuda.synchronize()
            self.graphs = False
            _warn_once(f"decoding: CUDA graph capture failed, stepping eagerly ({type(error).__name__}: {error})")
            return
        self.graph = graph
        torch.cuda.synchronize()
        self.capture_s = time.perf_counter() - started

    def _step(self) -> torch.Tensor:
        """One token per row from the static buffers, over the whole cache (fixed shapes, no host synchronisation)."""
        lean = self.lean
        batch = self.tokens.shape[0]
        lean.valid.index_fill_(1, self.index, True)
        mask = lean.valid[:, None, None, :]
        masks = {None: mask}
        for window in lean.windows:
            # As the lean decoder's window: the new token at slot s sees slots j with s - window < j <= s.
            masks[window] = mask & (self.slots > self.index - window)
        rope = {
            kind: (cos[self.position_ids][:, None], sin[self.position_ids][:, None])
            for kind, (cos, sin) in lean.rope.items()
        }
        norm, eps = lean._norm, lean.eps
        hidden = F.embedding(self.tokens[:, None], lean.embed)
        if lean.embed_scale is not None:
            hidden = hidden * lean.embed_scale
        for i, layer in enumerate(lean.layers):
            x = norm(hidden, layer.attn_in, eps)
            if layer.qkv is not None:
                q, k, v = F.linear(x, *layer.qkv).split(lean.qkv_split, dim=-1)
            else:
                q, k, v = F.linear(x, *layer.q), F.linear(x, *layer.k), F.linear(x, *layer.v)
            q = q.view(batch, 1, lean.heads, lean.head_dim)
            k = k.view(batch, 1, lean.kv_heads, lean.head_dim)
            if layer.q_norm is not None:
                q, k = norm(q, layer.q_norm, eps), norm(k, layer.k_norm, eps)
            cos, sin = rope[layer.rope]
            k_cache, v_cache = lean.k_cache[i], lean.v_cache[i]
            # `.to`: under a caller's autocast the new keys are bf16 while the cache keeps the weights' dtype (the lean
            # decoder's slice assignment casts the same way; index_copy_ does not cast by itself).
            k_cache.index_copy_(2, self.index, _rope(k.transpose(1, 2), cos, sin).to(k_cache.dtype))
            v = v.view(batch, 1, lean.kv_heads, lean.head_dim).transpose(1, 2)
            v_cache.index_copy_(2, self.index, v.to(v_cache.dtype))
            attn = lean._attend(_rope(q.transpose(1, 2), cos, sin), k_cache, v_cache, masks[layer.window])
            attn = F.linear(attn.transpose(1, 2).reshape(batch, 1, -1), *layer.o)
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
        logits = F.linear(norm(hidden[:, -1], lean.norm, eps), *lean.head)
        if lean.final_softcap is not None:
            logits = torch.tanh(logits / lean.final_softcap) * lean.final_softcap
        return logits


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
