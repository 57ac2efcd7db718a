"""Instrumentation attributes each forward pass to a model and a phase, with the FLOPs of its shapes."""

import inspect

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from rlhf.bench.flops import head_flops, trunk_flops
from rlhf.bench.instrument import Instrumentation
from rlhf.tracking import Tracker

CONFIG = dict(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=8,
    pad_token_id=0,
)


# transformers 5.24 renamed the forward's `past_key_values` to `cache` (the old name stays as a deprecated alias).
CACHE_IS_NAMED_CACHE = "cache" in inspect.signature(LlamaForCausalLM.forward).parameters
SPELLINGS = [
    "past_key_values",
    pytest.param(
        "cache",
        marks=pytest.mark.skipif(not CACHE_IS_NAMED_CACHE, reason="this transformers has no `cache=` keyword"),
    ),
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_passes_are_attributed_and_counted(spelling):
    """A prefill, a cached decode step, a reward score and a training pass, with the cache under either name."""
    with Instrumentation() as ins:
        policy = LlamaForCausalLM(LlamaConfig(**CONFIG))
        reward = LlamaForSequenceClassification(LlamaConfig(**CONFIG, num_labels=1)).requires_grad_(False)
    ids = torch.randint(1, 64, (2, 5))
    with torch.no_grad():  # a prefill and one decode step with a cache: one generation of 2 tokens
        out = policy(
            input_ids=ids,
            attention_mask=torch.ones(2, 5),
            use_cache=True,
            logits_to_keep=1,
            **{spelling: DynamicCache()},
        )
        policy(
            input_ids=ids[:, :1],
            attention_mask=torch.ones(2, 6),
            use_cache=True,
            logits_to_keep=1,
            **{spelling: out[spelling]},
        )
        reward(input_ids=ids)
    policy(input_ids=ids).logits.sum().backward()
    cfg = policy.config
    assert [(g.batch, g.prompt, g.steps) for g in ins.generations] == [(2, 5, 2)]
    assert [p[:5] for p in ins.passes] == [
        ("policy", "generate", 2, 5, 5),
        ("policy", "generate", 2, 1, 6),
        ("reward", "score", 2, 5, 5),
        ("policy", "update", 2, 5, 5),
    ]
    assert ins.passes[-1][-1] == 3 * trunk_flops(cfg, 2, 5, 5)
    assert ins.heads[-1][-1] == 3 * head_flops(10, 16, 64)
    summary = ins.forward_summary()
    assert summary["generate"]["policy"]["calls"] == 2
    assert summary["score"]["reward"]["tokens"] == 10
    assert ins.total_flops() == sum(p[-1] for p in ins.passes) + sum(h[-1] for h in ins.heads)


@pytest.mark.parametrize("spelling", ["past_key_values", "cache"])
def test_cache_is_seen_under_either_keyword_at_the_body(spelling):
    """The body's hook sees the keyword as the caller wrote it: transformers up to 5.23 passes `past_key_values`
    down to the body, 5.24 passes `cache`. Both must count as generation, whatever the installed version."""
    with Instrumentation() as ins:
        policy = LlamaForCausalLM(LlamaConfig(**CONFIG))
    ids = torch.randint(1, 64, (2, 5))
    with torch.no_grad():
        policy.model(input_ids=ids, attention_mask=torch.ones(2, 5), use_cache=True, **{spelling: DynamicCache()})
    assert [(g.batch, g.prompt, g.steps) for g in ins.generations] == [(2, 5, 1)]
    assert [p[:5] for p in ins.passes] == [("policy", "generate", 2, 5, 5)]


def test_lean_decoder_steps_are_counted_like_model_calls():
    """Sampling through `LlamaDecoder` never calls the model's forward; its steps must still be counted."""
    from rlhf.generation.sampling import sample

    with Instrumentation() as ins:
        policy = LlamaForCausalLM(LlamaConfig(**CONFIG)).eval()
        sample(
            policy,
            torch.randint(1, 64, (2, 5)),
            torch.ones(2, 5, dtype=torch.long),
            max_new_tokens=3,
            temperature=0,
            top_k=0,
            top_p=1.0,
            eos_id=-1,
            pad_id=0,
        )
    cfg = policy.config
    assert [(g.batch, g.prompt, g.steps) for g in ins.generations] == [(2, 5, 3)]
    assert [p[:5] for p in ins.passes] == [
        ("policy", "generate", 2, 5, 5),
        ("policy", "generate", 2, 1, 6),
        ("policy", "generate", 2, 1, 7),
    ]
    assert ins.passes[1][-1] == trunk_flops(cfg, 2, 1, 6)
    assert [h[-1] for h in ins.heads] == [head_flops(2, 16, 64)] * 3  # last position only


def test_hooks_and_patches_are_removed_on_exit(tmp_path):
    from rlhf.generation.decoding import LlamaDecoder

    original_log, original_init, original_step = Tracker.log, LlamaForCausalLM.__init__, LlamaDecoder._forward
    with Instrumentation():
        assert Tracker.log is not original_log and LlamaDecoder._forward is not original_step
    assert Tracker.log is original_log and LlamaForCausalLM.__init__ is original_init
    assert LlamaDecoder._forward is original_step


def test_padded_flops_are_the_executed_minus_each_rows_own():
    """Score and update passes over a left-padded batch: the useful FLOPs are each row at its real length alone."""
    with Instrumentation() as ins:
        policy = LlamaForCausalLM(LlamaConfig(**CONFIG))
        reward = LlamaForSequenceClassification(LlamaConfig(**CONFIG, num_labels=1)).requires_grad_(False)
    ids = torch.randint(1, 64, (2, 6))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # 3 + 6 real tokens of 12
    with torch.no_grad():
        reward(input_ids=ids, attention_mask=mask)
    policy(input_ids=ids, attention_mask=mask, logits_to_keep=4).logits.sum().backward()
    cfg = policy.config
    padding = ins.padding_summary()
    for phase, factor, head_positions, useful_head in (("score", 1, 12, 9), ("update", 3, 8, 7)):
        cell, out = padding[phase], 64 if phase == "update" else 1
        useful = factor * (trunk_flops(cfg, 1, 3, 3) + trunk_flops(cfg, 1, 6, 6) + head_flops(useful_head, 16, out))
        assert cell["tokens"] == 12 and cell["useful_tokens"] == 9
        assert cell["padded_token_share"] == pytest.approx(0.25)
        assert cell["useful_flops"] == useful
        assert cell["flops"] == factor * (trunk_flops(cfg, 2, 6, 6) + head_flops(head_positions, 16, out))
        assert cell["padded_flops"] == cell["flops"] - useful > 0
    summary = ins.forward_summary()
    assert summary["update"]["policy"]["useful_flops"] == padding["update"]["useful_flops"]
    assert "useful_flops" not in summary.get("generate", {}).get("policy", {})


def test_ppo_phase_memory_is_read_after_each_phases_first_call(monkeypatch):
    from rlhf.stages import ppo

    calls = []
    # Stand-ins for the loop's phases: the wrappers must call through to them and pass their results on.
    for name in ("collect_rollout", "score", "update_policy"):
        monkeypatch.setattr(ppo, name, lambda *args, _name=name: calls.append(_name) or _name)
    stand_ins = {name: getattr(ppo, name) for name in ("collect_rollout", "score", "update_policy")}
    with Instrumentation(ppo_phases=True) as ins:
        for _ in range(2):  # a second step reads nothing more
            assert [ppo.collect_rollout(1), ppo.score(2), ppo.update_policy(3)] == list(stand_ins)
        ins.mark("end")
    assert calls == list(stand_ins) * 2
    assert list(ins.memory) == ["setup", "rollout", "score", "update", "end"]
    for reading in ins.memory.values():
        assert reading["hwm_mb"] >= reading["rss_mb"] > 0
    assert {name: getattr(ppo, name) for name in stand_ins} == stand_ins
