"""The GPU decode path's maths on the CPU: `GraphDecoder`'s static-cache step, run eagerly (no graph capture).

On CUDA the same step is captured once and replayed (tests/gpu/test_gpu.py). Here it must give the lean decoder's
logits at every step, and the same sampled tokens, in float32, for every family the lean decoder covers (windows,
soft caps, fused projections, partial rotary): it attends over the whole cache with a mask instead of a slice.
"""

import pytest
import torch

from rlhf.generation.decoding import GraphDecoder, HFDecoder, LeanDecoder, make_decoder
from rlhf.generation.sampling import left_pad, sample
from tests.ppo.test_decoding import CAPACITY, EOS, FAMILIES, PAD, PROMPTS, build, full_forward_logits, step_logits


@pytest.mark.parametrize("family", FAMILIES)
def test_static_step_matches_the_lean_decoder_every_step(family):
    model = build(family)
    static = make_decoder(model, len(PROMPTS), CAPACITY, "static")
    assert isinstance(static, GraphDecoder) and not static.graphs  # no CUDA here: eager steps
    ours, lean = step_logits(static), step_logits(LeanDecoder(model, len(PROMPTS), CAPACITY))
    for step, (a, b) in enumerate(zip(ours, lean, strict=True)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=lambda m, step=step: f"step {step}: {m}")
    # ... and both are the model's own maths (a static step that ignored the mask or the window would pass the
    # first comparison only if the lean decoder were wrong the same way).
    for step, (a, b) in enumerate(zip(ours, full_forward_logits(model), strict=True)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=lambda m, step=step: f"step {step}: {m}")


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral-window", "gemma2", "phi3"])
def test_static_path_samples_the_lean_tokens(family):
    model = build(family)
    query, mask = left_pad(PROMPTS, PAD)
    settings = dict(max_new_tokens=12, temperature=0.9, top_k=0, top_p=1.0, eos_id=EOS, pad_id=PAD)
    static = sample(model, query, mask, generator=torch.Generator().manual_seed(3), decoder="static", **settings)
    lean = sample(model, query, mask, generator=torch.Generator().manual_seed(3), decoder="lean", **settings)
    assert static.shape[1] > 4
    assert torch.equal(static, lean)


def test_unwritten_slots_cannot_leak_into_attention():
    """Slots past the current length hold zeros and are masked; garbage there (NaN) must not change the logits."""
    model = build("llama")
    clean = step_logits(make_decoder(model, len(PROMPTS), CAPACITY, "static"))
    poisoned = make_decoder(model, len(PROMPTS), CAPACITY, "static")
    for cache in poisoned.lean.k_cache:
        cache.fill_(1e4)  # large keys in unwritten slots would dominate the softmax if the mask missed them
    for a, b in zip(step_logits(poisoned), clean, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_the_cache_capacity_is_enforced():
    model = build("llama")
    decoder = make_decoder(model, len(PROMPTS), 7, "static")
    query, mask = left_pad(PROMPTS, PAD)
    decoder.prefill(query, mask, torch.zeros_like(query))
    decoder.step(torch.tensor([1, 2, 3]), torch.full((3, 1), 6))
    with pytest.raises(ValueError, match="holds 7 positions"):
        decoder.step(torch.tensor([1, 2, 3]), torch.full((3, 1), 7))


def test_dispatch_by_kind_and_device():
    model = build("qwen2")
    assert type(make_decoder(model, 3, CAPACITY)) is LeanDecoder  # CPU "auto": the tuned lean loop, unchanged
    assert type(make_decoder(model, 3, CAPACITY, "lean")) is LeanDecoder
    assert type(make_decoder(model, 3, CAPACITY, "hf")) is HFDecoder
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        GraphDecoder(model, 3, CAPACITY, graphs=True)
    with pytest.raises(ValueError, match="unknown decoder 'fast'"):
        make_decoder(model, 3, CAPACITY, "fast")


def test_static_step_under_autocast_matches_the_lean_decoder():
    """float32 weights and caches, bf16 activations from a caller's autocast: the new keys and values are cast into
    the cache as the lean decoder's slice assignment casts them."""
    model = build("qwen2")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        static = step_logits(make_decoder(model, len(PROMPTS), CAPACITY, "static"))
        lean = step_logits(LeanDecoder(model, len(PROMPTS), CAPACITY))
    for a, b in zip(static, lean, strict=True):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b.float(), atol=0.05 * b.float().abs().max().item(), rtol=0)


@pytest.mark.parametrize("family", ["llama", "gemma2", "phi3"])
def test_static_step_is_one_fixed_graph(family):
    """What CUDA-graph capture needs, checked without CUDA: the step traces as one graph (no host synchronisation
    such as `.item()`, no Python branch on tensor values) and every later step reuses it (nothing that changes from
    step to step lives outside the static buffers)."""
    import torch._dynamo

    model = build(family)
    decoder = make_decoder(model, len(PROMPTS), CAPACITY, "static")
    decoder._step = torch.compile(decoder._step, backend="eager", fullgraph=True)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        traced = step_logits(decoder)
    for a, b in zip(traced, step_logits(LeanDecoder(model, len(PROMPTS), CAPACITY)), strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
