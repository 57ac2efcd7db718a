"""FLOP formulas on a hand-computed config, and agreement with the TRL reference script's own functions."""

import importlib.util
from types import SimpleNamespace

import pytest

from rlhf.bench import flops as F
from tests.conftest import REPO_ROOT

# embedded:tiny's dimensions: hidden 128, MLP 256, 2 layers, 4 query heads and 2 key/value heads of 32.
TINY = SimpleNamespace(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=2048,
    head_dim=32,
)


def test_matmul_params_by_hand():
    # per layer: q 128*128 + k,v 2*128*64 + o 128*128 + mlp 3*128*256 = 16384 + 16384 + 16384 + 98304 = 147456
    assert F.layer_matmul_params(TINY) == 2 * 147456
    assert F.matmul_params(TINY, with_lm_head=True) == 294912 + 128 * 2048
    assert F.matmul_params(TINY, with_lm_head=False) == 294912 + 128


def test_attention_and_trunk_flops_by_hand():
    # 2 layers * 2 matmuls (QK^T, AV) * 2 FLOPs * 3 queries * 5 keys * 4 heads * 32
    assert F.attn_flops_fwd(TINY, 3, 5) == 2 * 2 * 2 * 3 * 5 * 4 * 32
    assert F.trunk_flops(TINY, batch=2, n_q=3, n_kv=5) == 2 * (2 * 294912 * 3 + 15360)
    assert F.head_flops(positions=7, in_features=128, out_features=2048) == 2 * 7 * 128 * 2048


def test_generation_flops_by_hand():
    # 1 row, prompt 2, 2 sampled tokens: layers see 3 positions, lm_head 2, attention prefill (2x2) + one (1x3) step
    g = F.Generation(batch=1, prompt=2, steps=2)
    expected = 2 * 294912 * 3 + 2 * 128 * 2048 * 2 + F.attn_flops_fwd(TINY, 2, 2) + F.attn_flops_fwd(TINY, 1, 3)
    assert F.generation_flops(TINY, g) == expected


def test_trl_accounting_sums_its_passes():
    g = F.Generation(batch=2, prompt=4, steps=3)
    out = F.trl_accounting(TINY, TINY, [g, g], epochs=4)
    pol = 2 * (2 * F.matmul_params(TINY, True) * 7 + F.attn_flops_fwd(TINY, 7, 7))
    val = 2 * (2 * F.matmul_params(TINY, False) * 7 + F.attn_flops_fwd(TINY, 7, 7))
    assert out == {
        "gen": 2 * F.generation_flops(TINY, g),
        "ref": 2 * pol,
        "rm_value": 4 * val,
        "train": 2 * 4 * 3 * (pol + val),
    }


def test_same_formula_as_the_reference_script():
    script = REPO_ROOT.parent / "shared" / "bench" / "trl_ppo_baseline.py"
    if not script.is_file():
        pytest.skip("the TRL reference script is not beside the repository")
    spec = importlib.util.spec_from_file_location("trl_ppo_baseline", script)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    small = SimpleNamespace(
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=2048,
    )
    for cfg in (TINY, small):
        for head in (True, False):
            assert F.matmul_params(cfg, head) == reference.matmul_params(cfg, head)
        assert F.attn_flops_fwd(cfg, 13, 61) == reference.attn_flops_fwd(cfg, 13, 61)
