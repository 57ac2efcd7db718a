"""The `gpu` tier: what only a CUDA device can check. Skipped without one (tests/conftest.py); run by
scripts/gpu_check.sh on a lent GPU machine.

- the GPU decode path (static cache, CUDA-graph steps; rollout.decoder "static", opt-in until this tier has run) and the eager lean decoder against the model's
  own forward in bfloat16, and graph replay against the same step run eagerly in float32;
- the throughput benchmark's CUDA path (shortened) and the Qwen2-0.5B shape built on the GPU;
- a ppo run in bfloat16 on the GPU (the CPU tier trains in float32);
- the memory planner against `torch.cuda.max_memory_allocated` of a real ppo run;
- ZeRO-2 on one GPU through `accelerate launch`, where DeepSpeed is installed.

The GPU machine lacks some of the project's dependencies (see scripts/gpu_check.sh): a test that needs one it cannot
import is skipped with the reason, never failed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ..conftest import DATA_DIR

pytestmark = pytest.mark.gpu

# Rows of the planner check: embedded:small (21 M parameters) as policy, critic and reward model, float32.
PPO_RECIPE = """
stage: ppo
seed: 7
output_dir: {out}
model: {{name_or_path: {model}, dtype: {dtype}}}
data: {{train: {data}/ppo_prompts.jsonl, max_train_rows: 64, max_prompt_length: 40, max_length: 88}}
rewards:
  - {{name: learned, model: {reward}, weight: 1.0}}
  - {{name: voice_rules, function: brand_voice, weight: 0.0}}
value: {{mode: critic}}
rollout: {{max_new_tokens: 48, temperature: 1.0}}
update: {{epochs: 1, num_minibatches: 2}}
training: {{learning_rate: 1.0e-4, batch_size: 16, max_steps: 2, save_steps: null}}
tracking: {{report_to: [none]}}
"""


def needs(*modules: str) -> None:
    """Skips the test when a dependency the GPU machine may lack is not importable."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (carry the wheels in .whl/: see scripts/gpu_check.sh)")


def reward_model(model: str, out: Path) -> Path:
    """A one-logit classifier on `model`'s trunk with a seeded head: the learned reward of the ppo runs."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.models.loading import resolve_model_path

    path = resolve_model_path(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    reward = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    reward.config.pad_token_id = tokenizer.pad_token_id
    reward.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def ppo_recipe(tmp_path: Path, model: str, dtype: str) -> Path:
    recipe = tmp_path / "ppo.yaml"
    reward = reward_model(model, tmp_path / "reward")
    recipe.write_text(PPO_RECIPE.format(out=tmp_path / "ppo", model=model, dtype=dtype, data=DATA_DIR, reward=reward))
    return recipe


def small_llama(dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).to("cuda", dtype).eval()


def left_padded_prompts():
    import torch

    query = torch.randint(1, 512, (4, 12), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    mask = torch.ones_like(query)
    mask[0, :5] = 0  # left padding on two rows
    mask[2, :2] = 0
    return query.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("kind", ["static", "lean"])
def test_lean_maths_match_the_model_in_bfloat16_on_cuda(kind):
    """Both GPU decoders (CUDA-graph steps, rollout.decoder "static"; eager lean) against the model's own forward."""
    import torch

    from rlhf.generation.decoding import GraphDecoder, LeanDecoder, make_decoder
    from rlhf.generation.sampling import positions

    model = small_llama(torch.bfloat16)
    query, mask = left_padded_prompts()
    ours, theirs = make_decoder(model, 4, 12 + 8, kind), make_decoder(model, 4, 12 + 8, "hf")
    assert type(ours) is (GraphDecoder if kind == "static" else LeanDecoder)
    position_ids = positions(mask)
    with torch.no_grad():
        a, b = ours.prefill(query, mask, position_ids), theirs.prefill(query, mask, position_ids)
        for _ in range(8):
            assert a.dtype == torch.bfloat16
            # bf16 keeps 8 bits of mantissa: the same maths in another order differs by a few units of the last place.
            scale = b.float().abs().max()
            assert (a.float() - b.float()).abs().max() <= 0.03 * scale
            token = b.float().argmax(-1)  # both continue with the same tokens
            position_ids = position_ids[:, -1:] + 1
            a, b = ours.step(token, position_ids), theirs.step(token, position_ids)
    if kind == "static":
        assert ours.graphs and ours.graph is not None and ours.capture_s > 0  # the steps were replayed


def test_graph_replay_is_the_eager_static_step_in_float32():
    """Replaying the captured step gives the eager step's logits (same kernels) and the same sampled tokens."""
    import torch

    from rlhf.generation.decoding import GraphDecoder
    from rlhf.generation.sampling import positions, sample

    model = small_llama(torch.float32)
    query, mask = left_padded_prompts()
    logits = {}
    for graphs in (True, False):
        decoder = GraphDecoder(model, 4, 12 + 10, graphs=graphs)
        position_ids = positions(mask)
        with torch.no_grad():
            out = [decoder.prefill(query, mask, position_ids)]
            for step in range(10):
                position_ids = position_ids[:, -1:] + 1
                out.append(decoder.step(torch.full((4,), 7 + step, device="cuda"), position_ids))
        logits[graphs] = out
    for a, b in zip(logits[True], logits[False], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    settings = dict(max_new_tokens=10, temperature=0.9, top_k=0, top_p=1.0, eos_id=-1, pad_id=0)
    runs = [
        sample(model, query, mask, generator=torch.Generator("cuda").manual_seed(3), decoder=kind, **settings)
        for kind in ("static", "static", "static")
    ]
    assert runs[0].shape == (4, 10)
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])  # a fresh capture per rollout


def test_graph_decoder_under_a_callers_autocast():
    """A float32 model sampled inside bf16 autocast: the graph holds its own casts (none from autocast's cache,
    which is freed when the context exits) and agrees with the eager lean decoder under the same autocast."""
    import torch

    from rlhf.generation.decoding import GraphDecoder, LeanDecoder
    from rlhf.generation.sampling import positions

    model = small_llama(torch.float32)
    query, mask = left_padded_prompts()
    outputs = []
    for decoder in (GraphDecoder(model, 4, 12 + 6), LeanDecoder(model, 4, 12 + 6)):
        position_ids = positions(mask)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            logits = [decoder.prefill(query, mask, position_ids)]
            for step in range(6):
                position_ids = position_ids[:, -1:] + 1
                logits.append(decoder.step(torch.full((4,), 7 + step, device="cuda"), position_ids))
        outputs.append(logits)
    for a, b in zip(*outputs, strict=True):
        assert a.dtype == torch.bfloat16  # the casts happened inside the replayed steps
        assert (a.float() - b.float()).abs().max() <= 0.03 * b.float().abs().max()


def test_throughput_benchmark_on_cuda():
    """The throughput workload's CUDA path, shortened: graph decoder, bf16, peak memory and MFU filled in."""
    from rlhf.bench import devices, throughput

    rec = throughput.measure("tiny", device="cuda", batch=8, prompt=16, new_tokens=12)
    assert rec["settings"]["precision"] == "bf16" and rec["decoder"] == "GraphDecoder"
    assert rec["graph_capture_s"] > 0
    assert set(rec["generation"]) == {"ours", "lean_eager", "hf_generate"}
    known = devices.peak_for(rec["device"]["name"]) is not None
    for cell in [*rec["generation"].values(), rec["update"]]:
        assert cell["tokens_per_s"] > 0 and cell["peak_memory_gib"] > 0
        assert (cell["mfu"] is not None) == known
        if known:
            assert 0 < cell["mfu"] < 1


def test_qwen2_shape_builds_on_cuda_at_its_published_size():
    import torch

    from rlhf.bench import throughput

    model = throughput.build_model("qwen2-0.5b", "cuda", torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == throughput.PUBLISHED_PARAMS["qwen2-0.5b"]
    assert next(model.parameters()).device.type == "cuda"


def test_ppo_trains_in_bfloat16_on_the_gpu(tmp_path):
    needs("pydantic", "datasets")
    import torch
    from safetensors.torch import load_file

    from rlhf.models.loading import resolve_model_path
    from rlhf.pipeline import run_recipe
    from rlhf.recipe import load_recipe

    [out] = run_recipe(load_recipe(ppo_recipe(tmp_path, "embedded:tiny", "bfloat16")))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "loss/policy" in row]
    assert len(steps) == 2
    for row in steps:
        for key in ("loss/policy", "loss/value", "kl", "entropy", "reward/total", "rollout/logprob_gap_mean"):
            assert row[key] is not None, (key, row)  # metrics.jsonl writes non-finite values as null
        # bf16 turns rollout.recompute_logprobs 'auto' on: the sampler-trainer gap is logged, and small.
        assert 0 <= row["rollout/logprob_gap_mean"] < 0.1, row
    trained = load_file(out / "final" / "model.safetensors")
    start = load_file(Path(resolve_model_path("embedded:tiny")) / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert trained[name].dtype == torch.bfloat16
    assert not torch.equal(trained[name].float(), start[name].float())


def test_planner_matches_measured_cuda_memory(tmp_path):
    needs("pydantic", "datasets")
    import torch

    from rlhf.pipeline import run_recipe
    from rlhf.planner import GIB, LaunchSpec, plan_stage
    from rlhf.recipe import load_recipe

    recipe = load_recipe(ppo_recipe(tmp_path, "embedded:small", "float32"))
    planned = plan_stage(recipe, LaunchSpec("single", 1), device="cuda").total
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run_recipe(recipe)
    measured = torch.cuda.max_memory_allocated() - before
    print(f"planner {planned / GIB:.3f} GiB, measured {measured / GIB:.3f} GiB ({planned / measured - 1:+.0%})")
    assert abs(planned - measured) <= 0.25 * measured, (planned / GIB, measured / GIB)


def test_zero2_on_one_gpu(tmp_path):
    needs("pydantic", "datasets", "deepspeed")
    from ..distributed.launching import child_env, launch_command, results, run

    recipe = ppo_recipe(tmp_path, "embedded:tiny", "bfloat16")
    env = child_env(CUDA_VISIBLE_DEVICES=None, DS_ACCELERATOR=None)  # the launched tests hide the GPU; not here
    run(
        launch_command("zero2", ["-m", "rlhf", "run", str(recipe)], num_processes=1),
        tmp_path / "launch.log",
        env=env,
    )
    found = results(tmp_path / "ppo")
    assert (found["world_size"], found["distributed_type"], found["zero_stage"]) == (1, "DEEPSPEED", 2)
    assert found["steps"] == 2
