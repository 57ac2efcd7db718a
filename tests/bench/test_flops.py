"""FLOP formulas on hand-computed configs (the second one checks the TRL reference script's numbers)."""

from types import SimpleNamespace

from rlhf.bench import flops as F

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


def test_reference_scripts_numbers_on_a_wider_model():
    """The TRL reference script's (`shared/bench/trl_ppo_baseline.py`) `matmul_params` and `attn_flops_fwd`,
    evaluated by hand on its 'small' model (no head_dim in the config, so h / heads = 64; full-width key/values).
    Computed here rather than imported: the script lives outside the repository."""
    small = SimpleNamespace(
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=2048,
    )
    # per layer: q 512*512 + k,v 2*512*512 + o 512*512 + mlp 3*512*1376 = 262144 + 524288 + 262144 + 2113536
    assert F.layer_matmul_params(small) == 6 * 3162112
    assert F.matmul_params(small, with_lm_head=True) == 6 * 3162112 + 512 * 2048
    assert F.matmul_params(small, with_lm_head=False) == 6 * 3162112 + 512
    # 6 layers * 2 matmuls * 2 FLOPs * 13 queries * 61 keys * 8 heads * 64
    assert F.attn_flops_fwd(small, 13, 61) == 6 * 2 * 2 * 13 * 61 * 8 * 64
