"""The lean decoder against the model's own forward, family by family: same logits at every step, same sampled tokens,
LoRA folded in; anything else takes the model's own forward (through its current cache API), with the reason logged.

Each family is a tiny config built here (no hub). Fresh norm weights are all equal and fresh biases zero, which would
hide a wrong norm form or a missing bias, so `perturbed` randomises them; q/k projections are scaled up so attention
scores reach the soft cap. Prompts are longer than the sliding windows, so windows bite in prefill and in decoding.
"""

import logging
import warnings

import pytest
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from rlhf.generation import decoding
from rlhf.generation.decoding import HFDecoder, LeanDecoder, make_decoder, unsupported
from rlhf.generation.sampling import Batch, left_pad, positions, response_mask, sample
from rlhf.ppo.models import response_logits

PAD, EOS = 0, 2
PROMPTS = [[5, 9, 30, 41, 7, 12], [33, 8], [50, 51, 52]]
STEPS = 7
CAPACITY = 6 + STEPS + 1

COMMON = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    pad_token_id=PAD,
    eos_token_id=EOS,
    bos_token_id=1,
)
ALTERNATING = ["sliding_attention", "full_attention"]
# model class -> config overrides: what each family adds to the Llama layout is switched on and made to matter.
FAMILIES = {
    "llama": ("LlamaForCausalLM", {}),
    "llama-mha": ("LlamaForCausalLM", {"num_key_value_heads": 4}),
    "llama-biases": ("LlamaForCausalLM", {"attention_bias": True, "mlp_bias": True}),
    "llama-tied": ("LlamaForCausalLM", {"tie_word_embeddings": True}),
    "llama-llama3-rope": (
        "LlamaForCausalLM",
        {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            }
        },
    ),
    "mistral-window": ("MistralForCausalLM", {"sliding_window": 4}),
    "qwen2": ("Qwen2ForCausalLM", {}),
    "qwen2-window-layers": (
        "Qwen2ForCausalLM",
        {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1},
    ),
    "qwen3": ("Qwen3ForCausalLM", {"head_dim": 16}),
    "gemma": ("GemmaForCausalLM", {"head_dim": 8}),
    "gemma2": (
        "Gemma2ForCausalLM",
        {
            "head_dim": 8,
            "sliding_window": 4,
            "query_pre_attn_scalar": 12,
            "attn_logit_softcapping": 1.5,
            "final_logit_softcapping": 2.0,
        },
    ),
    "gemma3": (
        "Gemma3ForCausalLM",
        {
            "head_dim": 8,
            "sliding_window": 4,
            "layer_types": ALTERNATING,
            "query_pre_attn_scalar": 12,
            "final_logit_softcapping": 2.0,
        },
    ),
    "phi3": (
        "Phi3ForCausalLM",
        {
            "sliding_window": 5,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        },
    ),
}
# LoRA targets per family (Phi-3 fuses q|k|v and gate|up).
LORA_TARGETS = {"Phi3ForCausalLM": ["qkv_proj", "gate_up_proj", "o_proj"]}


def build(family: str, dtype: torch.dtype = torch.float32):
    class_name, overrides = FAMILIES[family]
    cls = getattr(transformers, class_name)
    torch.manual_seed(0)
    return perturbed(cls(cls.config_class(**{**COMMON, **overrides}))).to(dtype).eval()


@torch.no_grad()
def perturbed(model):
    for name, param in model.named_parameters():
        if "norm" in name or name.endswith("bias"):
            param.normal_(0, 0.5)
        elif any(p in name for p in ("q_proj", "k_proj", "qkv_proj")):
            param.mul_(8.0)
    return model


def llama(**overrides) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**{**COMMON, **overrides})).eval()


def tokens(i: int) -> torch.Tensor:
    return torch.tensor([3 + i, 10 + i, 20 + i])  # fixed tokens: every path sees the same inputs


@torch.no_grad()
def step_logits(decoder) -> list[torch.Tensor]:
    """Logits of the prefill and of STEPS appends."""
    query, mask = left_pad(PROMPTS, PAD)
    pos = positions(mask)
    out = [decoder.prefill(query, mask, pos)]
    for i in range(STEPS):
        pos = pos[:, -1:] + 1
        out.append(decoder.step(tokens(i), pos))
    return out


@torch.no_grad()
def full_forward_logits(model) -> list[torch.Tensor]:
    """The same logits from the model's own forward over the whole sequence so far (no cache)."""
    ids, mask = left_pad(PROMPTS, PAD)
    out = []
    for i in range(STEPS + 1):
        if i:
            ids = torch.cat([ids, tokens(i - 1)[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        out.append(model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits[:, -1])
    return out


def assert_same(ours: list[torch.Tensor], theirs: list[torch.Tensor], atol: float = 2e-5, rtol: float = 1e-4):
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m, step=step: f"step {step}: {m}")


@pytest.mark.parametrize("family", FAMILIES)
def test_lean_decoder_matches_model_forward_every_step(family):
    model = build(family)
    assert unsupported(model) is None
    fast = make_decoder(model, len(PROMPTS), CAPACITY)
    assert isinstance(fast, LeanDecoder)
    reference = full_forward_logits(model)
    assert_same(step_logits(fast), reference)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the fallback uses the current cache API: no deprecation
        assert_same(step_logits(HFDecoder(model)), reference)


def test_the_parity_check_sees_windows_and_soft_caps(monkeypatch):
    """Switching a family trait off in the lean decoder breaks parity (the configs above exercise each)."""
    from rlhf.generation.decoding import lean

    gemma2 = build("gemma2")
    monkeypatch.setattr(lean, "_windows", lambda config, family: [None] * config.num_hidden_layers)
    with pytest.raises(AssertionError):
        assert_same(step_logits(make_decoder(gemma2, 3, CAPACITY)), full_forward_logits(gemma2))
    monkeypatch.undo()
    decoder = make_decoder(gemma2, 3, CAPACITY)
    decoder.attn_softcap = None
    with pytest.raises(AssertionError):
        assert_same(step_logits(decoder), full_forward_logits(gemma2))


@pytest.mark.parametrize("family", ["llama", "mistral-window", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"])
def test_lean_decoder_matches_in_bfloat16(family):
    model = build(family, torch.bfloat16)
    ours, theirs = step_logits(make_decoder(model, 3, CAPACITY)), step_logits(HFDecoder(model))
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)
        assert torch.equal(a.argmax(-1), b.argmax(-1))


@pytest.mark.parametrize("family", ["llama", "mistral-window", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"])
def test_lora_adapter_is_folded_into_the_effective_weights(family):
    from peft import LoraConfig, get_peft_model

    base = build(family)
    targets = LORA_TARGETS.get(type(base).__name__, ["q_proj", "v_proj", "down_proj"])
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # fresh adapters are the identity: make them change the function
                param.normal_(0, 0.3)
    assert unsupported(model) is None
    with_adapter = step_logits(make_decoder(model, 3, CAPACITY))
    assert_same(with_adapter, full_forward_logits(model))
    assert_same(step_logits(HFDecoder(model)), with_adapter)
    with model.disable_adapter():  # the LoRA reference policy samples through the same path
        without = step_logits(make_decoder(model, 3, CAPACITY))
        assert_same(without, full_forward_logits(model))
    assert not torch.allclose(with_adapter[-1], without[-1], atol=1e-3)


@pytest.mark.parametrize("family", ["llama", "mistral-window", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"])
def test_sampling_is_the_same_on_both_paths(family):
    model = build(family)
    query, mask = left_pad(PROMPTS, PAD)
    settings = dict(max_new_tokens=16, temperature=0.9, top_k=0, top_p=1.0, eos_id=EOS, pad_id=PAD)
    fast = sample(model, query, mask, generator=torch.Generator().manual_seed(5), **settings)
    slow = sample(model, query, mask, generator=torch.Generator().manual_seed(5), decoder="hf", **settings)
    assert fast.shape[1] > 4
    assert torch.equal(fast, slow)


@pytest.fixture
def fresh_log(monkeypatch, caplog):
    """A clean slate for `make_decoder`'s once-per-process messages, with INFO captured."""
    monkeypatch.setattr(decoding, "_announced", set())
    caplog.set_level(logging.INFO, logger="rlhf")
    return caplog


@pytest.mark.parametrize(
    ("cls", "config"),
    [
        ("GPT2LMHeadModel", dict(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64)),
        (
            "GPTNeoXForCausalLM",
            dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4),
        ),
    ],
)
def test_other_architectures_fall_back_with_the_reason_logged(cls, config, fresh_log):
    """GPT-2 and GPT-NeoX stay on their own forward: same logits as a full forward, no deprecated cache argument."""
    model_cls = getattr(transformers, cls)
    torch.manual_seed(0)
    model = model_cls(model_cls.config_class(**config, pad_token_id=PAD, eos_token_id=EOS)).eval()
    decoder = make_decoder(model, 3, CAPACITY)
    make_decoder(model, 3, CAPACITY)
    assert isinstance(decoder, HFDecoder)
    messages = [r.getMessage() for r in fresh_log.records if r.levelno == logging.INFO]
    assert messages == [
        f"decoding: {cls}'s own forward (no lean decoder for model_type '{model.config.model_type}'; "
        f"it covers {', '.join(sorted(decoding.FAMILIES))})"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert_same(step_logits(decoder), full_forward_logits(model))


def test_lean_decoder_choice_is_logged_once(fresh_log):
    model = build("qwen2")
    for _ in range(3):
        make_decoder(model, 3, CAPACITY)
    assert [r.getMessage() for r in fresh_log.records] == ["decoding: lean KV-cache decoder for Qwen2ForCausalLM"]
    make_decoder(model, 3, CAPACITY, kind="hf")
    assert fresh_log.records[-1].getMessage() == "decoding: Qwen2ForCausalLM's own forward (decoder=hf requested)"


def test_unsupported_configs_use_their_own_forward(fresh_log):
    model = llama(rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0})
    assert unsupported(model) == "rope_type=dynamic"
    assert isinstance(make_decoder(model, 1, 8), HFDecoder)
    assert "decoding: LlamaForCausalLM's own forward (rope_type=dynamic)" in fresh_log.messages
    phi3_long = transformers.Phi3ForCausalLM(
        transformers.Phi3Config(
            **COMMON,
            rope_parameters={
                "rope_type": "longrope",
                "rope_theta": 10000.0,
                "short_factor": [1.0] * 4,
                "long_factor": [2.0] * 4,
                "original_max_position_embeddings": 16,
            },
        )
    )
    assert unsupported(phi3_long) == "rope_type=longrope"

    class Custom(LlamaForCausalLM):  # a subclass may change the maths: never assumed to be plain Llama
        pass

    assert unsupported(Custom(llama().config)) == "Custom is not LlamaForCausalLM"


def test_adapters_that_cannot_be_folded_fall_back():
    from peft import LoraConfig, get_peft_model

    dora = get_peft_model(llama(), LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))
    assert unsupported(dora) == "layers.0.self_attn.q_proj: DoRA adapter"
    on_embeddings = get_peft_model(llama(), LoraConfig(r=4, target_modules=["embed_tokens"]))
    assert unsupported(on_embeddings).startswith("embed_tokens is ")


@pytest.mark.parametrize("decoder", ["auto", "hf"])
def test_sampled_logprobs_and_entropy_match_a_full_forward(decoder):
    """The per-token statistics PPO uses as its 'old' policy equal those of a fresh forward over prompt + response."""
    model = llama()
    temperature = 0.7
    query, mask = left_pad(PROMPTS, PAD)
    out = sample(
        model,
        query,
        mask,
        max_new_tokens=20,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        eos_id=EOS,
        pad_id=PAD,
        generator=torch.Generator().manual_seed(2),
        decoder=decoder,
        stats=True,
    )
    resp_mask, has_eos = response_mask(out.tokens, EOS)
    batch = Batch(query, mask, out.tokens, resp_mask, has_eos)
    ids, attention, pos = batch.sequence()
    with torch.no_grad():
        logp = torch.log_softmax(response_logits(model, ids, attention, pos, out.tokens.shape[1]) / temperature, -1)
    expected = logp.gather(-1, out.tokens[..., None]).squeeze(-1) * resp_mask
    entropy = -(logp.exp() * logp).sum(-1) * resp_mask
    torch.testing.assert_close(out.logprobs, expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(out.entropy, entropy, atol=2e-5, rtol=1e-4)
    assert (out.logprobs[resp_mask == 0] == 0).all()


def test_stats_need_a_sampling_distribution():
    query, mask = left_pad(PROMPTS, PAD)
    with pytest.raises(ValueError, match="temperature > 0"):
        sample(
            llama(),
            query,
            mask,
            max_new_tokens=2,
            temperature=0,
            top_k=0,
            top_p=1.0,
            eos_id=EOS,
            pad_id=PAD,
            stats=True,
        )
