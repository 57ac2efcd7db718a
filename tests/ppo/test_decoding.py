"""The lean Llama decoder against the model's own forward: same logits at every step, same tokens, LoRA folded in."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlhf.ppo.decoding import HFDecoder, LlamaDecoder, make_decoder, unsupported
from rlhf.ppo.models import response_logits
from rlhf.ppo.rollout import Batch, left_pad, positions, response_mask, sample

PAD, EOS = 0, 2


def llama(**overrides) -> LlamaForCausalLM:
    settings = dict(
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
    settings.update(overrides)
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**settings)).eval()


PROMPTS = [[5, 9, 30, 41, 7, 12], [33, 8], [50, 51, 52]]


def step_logits(decoder, steps: int = 6) -> list[torch.Tensor]:
    """Logits of the prefill and of `steps` greedy appends (one token list shared by both decoders)."""
    query, mask = left_pad(PROMPTS, PAD)
    pos = positions(mask)
    out = [decoder.prefill(query, mask, pos)]
    for i in range(steps):
        pos = pos[:, -1:] + 1
        token = torch.tensor([3 + i, 10 + i, 20 + i])  # fixed tokens: both decoders see the same inputs
        out.append(decoder.step(token, pos))
    return out


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"num_key_value_heads": 4},
        {"attention_bias": True, "mlp_bias": True},
        {"tie_word_embeddings": True},
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
    ],
    ids=["gqa", "mha", "biases", "tied", "llama3-rope"],
)
@torch.no_grad()
def test_lean_decoder_matches_model_forward_every_step(overrides):
    model = llama(**overrides)
    if overrides.get("attention_bias"):  # fresh biases are zero: make them matter
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.5)
    assert unsupported(model) is None
    fast = make_decoder(model, len(PROMPTS), 6 + 7)
    assert isinstance(fast, LlamaDecoder)
    for ours, theirs in zip(step_logits(fast), step_logits(HFDecoder(model)), strict=True):
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_lean_decoder_matches_in_bfloat16():
    model = llama().to(torch.bfloat16)
    for ours, theirs in zip(step_logits(make_decoder(model, 3, 13)), step_logits(HFDecoder(model)), strict=True):
        assert ours.dtype == torch.bfloat16
        torch.testing.assert_close(ours, theirs, atol=1e-2, rtol=1e-2)
        assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


@torch.no_grad()
def test_lora_adapter_is_folded_into_the_effective_weights():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # fresh adapters are the identity: make them change the function
            param.normal_(0, 0.3)
    assert unsupported(model) is None
    with_adapter = step_logits(make_decoder(model, 3, 13))
    for ours, theirs in zip(with_adapter, step_logits(HFDecoder(model)), strict=True):
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
    with model.disable_adapter():  # the LoRA reference policy samples through the same path
        without = step_logits(make_decoder(model, 3, 13))
        for ours, theirs in zip(without, step_logits(HFDecoder(model)), strict=True):
            torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(with_adapter[-1], without[-1], atol=1e-3)


def test_unsupported_models_use_their_own_forward():
    model = llama(rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0})
    assert "dynamic" in unsupported(model)
    assert isinstance(make_decoder(model, 1, 8), HFDecoder)
    assert isinstance(make_decoder(llama(), 1, 8, kind="hf"), HFDecoder)

    class Custom(LlamaForCausalLM):  # a subclass may change the maths: never assumed to be plain Llama
        pass

    assert "Custom" in unsupported(Custom(llama().config))


def test_sampling_is_the_same_on_both_paths():
    model = llama()
    query, mask = left_pad(PROMPTS, PAD)
    settings = dict(max_new_tokens=16, temperature=0.9, top_k=0, top_p=1.0, eos_id=EOS, pad_id=PAD)
    fast = sample(model, query, mask, generator=torch.Generator().manual_seed(5), **settings)
    slow = sample(model, query, mask, generator=torch.Generator().manual_seed(5), decoder="hf", **settings)
    assert torch.equal(fast, slow)


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
