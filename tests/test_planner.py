"""The memory planner's arithmetic (rlhf.planner, rlhf.shapes) by hand, the launch configs it reads, `rlhf plan`."""

from __future__ import annotations

import pytest

from rlhf.cli import main
from rlhf.config import LoraConfig, PPOStage, SFTStage
from rlhf.planner import LaunchSpec, PlanError, autocast_on, plan_ppo, plan_sft, shipped_launch_configs
from rlhf.shapes import ModelShape

from .conftest import PIPELINE, REPO_ROOT

# V=1000, H=64, I=128, 2 layers, 4 heads of 16, 2 kv heads, untied head.
SHAPE = ModelShape(
    vocab_size=1000, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16
)


def sft_stage(**training) -> SFTStage:
    return SFTStage(
        stage="sft",
        output_dir="out",
        data={"train": "rows.jsonl", "max_length": 10, "max_prompt_length": 5},
        training={"batch_size": 2, **training},
    )


def test_parameter_counts_by_hand():
    # One layer: q 64x64 + k 64x32 + v 64x32 + o 64x64 + gate/up/down 3 x 64x128 + two norms of 64.
    assert SHAPE.layer_parameters() == 4096 + 2048 + 2048 + 4096 + 3 * 8192 + 128 == 36992
    # Embedding 1000x64, two layers, final norm, untied LM head 1000x64 (or a one-logit score head of 64).
    assert SHAPE.parameters("lm") == 64000 + 2 * 36992 + 64 + 64000 == 202048
    assert SHAPE.parameters("score") == 64000 + 2 * 36992 + 64 + 64 == 138112
    # LoRA r=4 on every linear layer: 4 x (in + out) each; q 512, k 384, v 384, o 512, gate/up/down 768 each.
    assert SHAPE.lora_parameters(LoraConfig(r=4)) == 2 * (512 + 384 + 384 + 512 + 3 * 768) == 8192
    assert SHAPE.lora_parameters(LoraConfig(r=4, target_modules=["q_proj", "v_proj"])) == 2 * (512 + 384)
    # Per token and layer: 6h + 5 x heads x head_dim + heads + 4i = 384 + 320 + 4 + 512; then 3h + seq_len.
    assert SHAPE.activation_elements(seq_len=10) == 2 * 1220 + 192 + 10 == 2642
    assert SHAPE.activation_elements(seq_len=10, checkpointing=True) == 2 * 64 + 1220 + 192 + 10
    # KV cache: tokens x layers x 2 x kv_heads x head_dim.
    assert SHAPE.kv_cache_elements(100) == 100 * 2 * 2 * 2 * 16


def test_sft_single_process_by_hand():
    plan = plan_sft(sft_stage(), SHAPE, LaunchSpec("single", 1), device="cpu")
    (policy,) = plan.models
    # float32: weights and gradients 4 bytes, torch AdamW's two moments 8 bytes per parameter.
    assert (policy.weights, policy.gradients, policy.optimizer) == (808192, 808192, 1616384)
    # 2 x 10 tokens x 2642 elements x 4 bytes; LM head: 9 float32 tiles of 20 tokens x 1000 entries on CPU.
    assert plan.phases == {"train": {"activations": 211360, "lm head tiles": 720000}}
    # No DeepSpeed, no accumulation: the gradients replace freed activations, so the larger of the two counts.
    assert plan.total == 808192 + 1616384 + max(808192, 211360 + 720000) == 3355936
    accumulating = plan_sft(sft_stage(gradient_accumulation_steps=2), SHAPE, LaunchSpec("single", 1), device="cpu")
    assert accumulating.total == 808192 + 1616384 + 808192 + 211360 + 720000


def test_zero2_and_zero3_offload_by_hand():
    launch = LaunchSpec("zero2", 4, zero_stage=2, reduce_bucket=1000)
    # On a GPU both reduce buckets are reserved whole; on the CPU only what gradients fill (here: all of both).
    assert plan_sft(sft_stage(), SHAPE, launch, device="cuda").buffers == {"zero buckets": 1000 * 4 * 2}
    zero2 = plan_sft(sft_stage(), SHAPE, launch, device="cpu")
    (policy,) = zero2.models
    # Weights replicated; gradients split 4 ways; fp32 master + 2 moments (12 bytes) split 4 ways.
    assert (policy.weights, policy.gradients, policy.optimizer) == (808192, 202048, 606144)
    assert zero2.buffers == {"zero buckets": 1000 * 4 * 2}  # two reduce buckets (overlap_comm)
    assert zero2.total == 808192 + 202048 + 606144 + 8000 + 211360 + 720000

    launch = LaunchSpec(
        "zero3_offload",
        4,
        zero_stage=3,
        offload_params=True,
        offload_optimizer=True,
        reduce_bucket=1000,
        prefetch_bucket=500,
    )
    zero3 = plan_sft(sft_stage(), SHAPE, launch, device="cpu")
    (policy,) = zero3.models
    assert (policy.weights, policy.gradients, policy.optimizer) == (0, 0, 0)
    assert policy.offloaded == 808192 / 4 + 606144 + 202048
    # One reduce bucket, and the gathered working set: the largest module (the 1000x64 embedding) + prefetch.
    assert zero3.buffers == {"zero buckets": 4000, "zero3 gathered": (64000 + 500) * 4}
    assert zero3.total == 4000 + 258000 + 211360 + 720000


def test_ppo_lora_with_value_head_by_hand():
    cfg = PPOStage(
        stage="ppo",
        output_dir="out",
        model={"dtype": "bfloat16", "lora": {"r": 4}},
        data={"train": "prompts.jsonl", "max_length": 16, "max_prompt_length": 6},
        rewards=[{"name": "learned", "model": "reward_dir"}, {"name": "rules", "function": "brand_voice"}],
        rollout={"max_new_tokens": 4},
        value={"mode": "head"},
        update={"num_minibatches": 2},
        training={"batch_size": 4},
    )
    plan = plan_ppo(cfg, {"policy": SHAPE, "reward/learned": SHAPE}, LaunchSpec("single", 1), device="cpu")
    models = {m.role: m for m in plan.models}
    # The policy: bf16 base (2 bytes) + float32 adapters; only the adapters train. No ref_policy copy with LoRA.
    assert set(models) == {"policy", "value (head)", "reward/learned"}
    assert (models["policy"].weights, models["policy"].gradients, models["policy"].optimizer) == (
        202048 * 2 + 8192 * 4,
        8192 * 4,
        2 * 8192 * 4,
    )
    assert models["value (head)"].weights == 65 * 4
    assert models["reward/learned"].weights == 138112 * 2 and models["reward/learned"].gradients == 0
    # Rollout: KV cache of 4 x (6 + 4) tokens in bf16, then response logits and log-softmax in float32.
    assert plan.phases["rollout"] == {"kv cache": 40 * 2 * 2 * 2 * 16 * 2, "scoring logits": 2 * 4 * 4 * 1000 * 4}
    # Update: micro-batch of 4 / 2 minibatches = 2 sequences of 10 tokens; response logits (x4) in float32.
    assert plan.phases["update"] == {"activations": 2 * 10 * 2642 * 2, "response logits": 4 * 2 * 4 * 1000 * 4}
    assert plan.peak_phase == "update"
    resident = (202048 * 2 + 8192 * 4) + 65 * 4 + 138112 * 2 + 2 * 8192 * 4 + 65 * 8
    assert plan.total == resident + max(8192 * 4 + 65 * 4, 105680 + 128000)


def test_grpo_trains_the_policy_alone_and_samples_k_replies_per_prompt():
    base = dict(
        stage="ppo",
        output_dir="out",
        model={"dtype": "bfloat16", "lora": {"r": 4}},
        data={"train": "prompts.jsonl", "max_length": 16, "max_prompt_length": 6},
        rewards=[{"name": "learned", "model": "reward_dir"}],
        rollout={"max_new_tokens": 4},
        update={"num_minibatches": 2},
        training={"batch_size": 4},
    )
    gae = plan_ppo(
        PPOStage(**base, value={"mode": "head"}),
        {"policy": SHAPE, "reward/learned": SHAPE},
        LaunchSpec("single", 1),
        device="cpu",
    )
    grpo = plan_ppo(
        PPOStage(
            **{**base, "rollout": {"max_new_tokens": 4, "samples_per_prompt": 3}}, advantage={"estimator": "grpo"}
        ),
        {"policy": SHAPE, "reward/learned": SHAPE},
        LaunchSpec("single", 1),
        device="cpu",
    )
    assert {m.role for m in grpo.models} == {"policy", "reward/learned"}  # no value head, no critic
    # 4 prompts x 3 replies: three times the KV cache and scoring logits of one reply per prompt.
    assert grpo.phases["rollout"] == {key: 3 * value for key, value in gae.phases["rollout"].items()}
    assert grpo.phases["update"]["activations"] == 3 * gae.phases["update"]["activations"]


def test_bf16_autocast_by_hand():
    # Per layer: float32 4h + heads (residual stream, RMSNorm's input and output, log-sum-exp) = 260 elements x 4;
    # bf16 5 x heads x head_dim + 4i + 5h (the products, and each linear layer's cast of its input) = 1152 x 2.
    assert SHAPE.activation_bytes(10, False, 4, autocast=True) == 2 * (260 * 4 + 1152 * 2) + (192 + 10) * 4 == 7496
    assert SHAPE.activation_bytes(10, True, 4, autocast=True) == 2 * 64 * 4 + 3344 + 808
    assert SHAPE.activation_bytes(10, False, 4) == 2642 * 4  # without autocast: the elements at the dtype's width
    # The weights autocast casts: every linear layer and the head, not the embedding.
    assert SHAPE.autocast_parameters("lm") == 2 * 36864 + 64000
    assert SHAPE.autocast_parameters("score") == 2 * 36864 + 64
    single = LaunchSpec("single", 1)
    plan = plan_sft(sft_stage(mixed_precision="bf16"), SHAPE, single, device="cpu")
    assert plan.autocast
    # Weights, gradients and AdamW stay float32; activations mixed; bf16 copies of the cast weights until backward.
    assert plan.models == plan_sft(sft_stage(), SHAPE, single, device="cpu").models
    assert plan.phases == {
        "train": {"activations": 20 * 7496, "lm head tiles": 720000, "autocast weight copies": 2 * 137728}
    }
    # With gradient checkpointing only one layer's copies (recomputed in backward) and the head's are alive.
    checkpointed = plan_sft(sft_stage(mixed_precision="bf16", gradient_checkpointing=True), SHAPE, single, "cpu")
    assert checkpointed.phases["train"]["autocast weight copies"] == 2 * (36864 + 64000)


def test_bf16_autocast_in_ppo_halves_the_kv_cache_and_keeps_weight_copies():
    cfg = PPOStage(
        stage="ppo",
        output_dir="out",
        data={"train": "prompts.jsonl", "max_length": 16, "max_prompt_length": 6},
        rewards=[{"name": "learned", "model": "reward_dir"}],
        rollout={"max_new_tokens": 4},
        value={"mode": "critic"},
        update={"num_minibatches": 2},
        training={"batch_size": 4, "mixed_precision": "bf16"},
    )
    shapes = {"policy": SHAPE, "reward/learned": SHAPE, "value": SHAPE}
    plan = plan_ppo(cfg, shapes, LaunchSpec("single", 1), device="cpu")
    fp32 = plan_ppo(
        cfg.model_copy(update={"training": cfg.training.model_copy(update={"mixed_precision": "no"})}),
        shapes,
        LaunchSpec("single", 1),
        device="cpu",
    )
    assert plan.phases["rollout"]["kv cache"] == fp32.phases["rollout"]["kv cache"] / 2
    # Autocast caches the bf16 copies of the trained policy and critic while sampling and scoring.
    assert plan.phases["rollout"]["autocast weight copies"] == 2 * (137728 + 73792)
    assert plan.phases["update"]["activations"] == 2 * 10 * 7496
    assert plan.phases["update"]["critic activations"] == 2 * 10 * 7496
    assert plan.phases["update"]["autocast weight copies"] == 2 * (137728 + 73792)


def test_bf16_autocast_follows_the_run_auto_and_deepspeed(monkeypatch):
    import rlhf.precision as precision

    single, zero2 = LaunchSpec("single", 1), LaunchSpec("zero2", 2, zero_stage=2)
    auto = sft_stage(mixed_precision="auto")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert not autocast_on(auto, single, "cpu") and autocast_on(auto, single, "cuda")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert autocast_on(auto, single, "cpu")
    # As the run: DeepSpeed refuses bf16 autocast (and says what to set instead); auto is off there.
    assert not autocast_on(auto, zero2, "cuda")
    with pytest.raises(PlanError, match="set model.dtype: bfloat16 instead"):
        plan_sft(sft_stage(mixed_precision="bf16"), SHAPE, zero2)


def test_plan_command_marks_deepspeed_configs_refused_for_bf16_autocast(capsys):
    args = [str(PIPELINE), "run_dir=runs/x", "sft.training.mixed_precision=bf16"]
    launch = str(REPO_ROOT / "recipes/launch/single.yaml")
    assert main(["plan", *args, "--launch", launch, "--device-memory-gb", "2"]) == 0
    out = capsys.readouterr().out
    assert "\nsft (bf16 autocast over float32 weights)\n" in out and "\nreward\n" in out
    verdicts = {line.split()[1]: line.split()[0] for line in out.split("\nshipped launch configs")[1].splitlines()[1:]}
    assert verdicts["single"] == verdicts["ddp"] == "fits"
    assert {verdicts[name] for name in ("zero1", "zero2", "zero3", "zero3_offload", "two_nodes")} == {"refused"}
    assert main(["plan", *args, "--launch", str(REPO_ROOT / "recipes/launch/zero2.yaml")]) == 2
    assert "set model.dtype: bfloat16 instead" in capsys.readouterr().err


def test_shipped_launch_configs_read():
    specs = {path.stem: LaunchSpec.from_file(path) for path in shipped_launch_configs()}
    assert set(specs) == {"single", "ddp", "zero1", "zero2", "zero3", "zero3_offload", "two_nodes"}
    assert (specs["single"].processes, specs["single"].zero_stage) == (1, None)
    assert specs["ddp"].zero_stage is None and specs["ddp"].processes == 8
    assert [specs[f"zero{n}"].zero_stage for n in (1, 2, 3)] == [1, 2, 3]
    assert specs["zero3_offload"].offload_params and specs["zero3_offload"].offload_optimizer
    assert not specs["zero3"].offload_params and not specs["zero3"].offload_optimizer
    assert (specs["two_nodes"].processes, specs["two_nodes"].zero_stage) == (16, 3)
    assert LaunchSpec.from_file(REPO_ROOT / "recipes/launch/zero2.yaml", processes=2).partitions("optimizer") == 2


def ppo_critic_stage(**model) -> PPOStage:
    return PPOStage(
        stage="ppo",
        output_dir="out",
        model=model,
        data={"train": "prompts.jsonl", "max_length": 16, "max_prompt_length": 6},
        rewards=[{"name": "learned", "model": "reward_dir"}],
        rollout={"max_new_tokens": 4},
        value={"mode": "critic"},
        update={"num_minibatches": 2},
        training={"batch_size": 4},
    )


def test_ppo_zero3_shards_the_frozen_models_and_gathers_the_policy_for_rollouts():
    launch = LaunchSpec("zero3", 4, zero_stage=3, reduce_bucket=1000, prefetch_bucket=500)
    shapes = {"policy": SHAPE, "value": SHAPE, "reward/learned": SHAPE}
    plan = plan_ppo(ppo_critic_stage(), shapes, launch, device="cpu")
    models = {m.role: (m.weights, m.gradients, m.optimizer) for m in plan.models}
    # Every model is partitioned 4 ways, the frozen ones too (ppo prepares them as DeepSpeed inference engines).
    assert models == {
        "policy": (202048, 202048, 202048 * 12 / 4),
        "value (critic)": (138112, 138112, 138112 * 12 / 4),
        "ref_policy": (202048, 0, 0),
        "reward/learned": (138112, 0, 0),
    }
    # One reduce bucket; the gathered working set is the largest module (the 1000x64 embedding) + the prefetch.
    assert plan.buffers == {"zero buckets": 1000 * 4, "zero3 gathered": (64000 + 500) * 4}
    # Sampling runs on the whole policy, gathered once beside its partition.
    assert plan.phases["rollout"] == {
        "kv cache": 4 * 10 * 2 * 2 * 2 * 16 * 4,
        "scoring logits": 2 * 4 * 4 * 1000 * 4,
        "gathered policy": 202048 * 4,
    }
    # ZeRO-2: frozen models whole on every process, nothing gathered.
    zero2 = plan_ppo(ppo_critic_stage(), shapes, LaunchSpec("zero2", 4, zero_stage=2, reduce_bucket=1000), "cpu")
    assert {m.role: m.weights for m in zero2.models if not m.trainable} == {
        "ref_policy": 202048 * 4,
        "reward/learned": 138112 * 4,
    }
    assert "gathered policy" not in zero2.phases["rollout"]
    # LoRA: no ref_policy copy; the gathered policy carries its float32 adapters.
    lora = plan_ppo(ppo_critic_stage(lora={"r": 4}), shapes, launch, device="cpu")
    assert "ref_policy" not in {m.role for m in lora.models}
    assert lora.phases["rollout"]["gathered policy"] == 202048 * 4 + 8192 * 4


def table_rows(out: str) -> dict[str, dict[str, list[float]]]:
    """The numbers of `rlhf plan`'s tables: {stage: {row label: [numbers]}}."""
    tables, stage = {}, None
    for line in out.splitlines():
        if line and not line.startswith(" ") and not line.startswith("launch"):
            stage = line.strip()
            tables[stage] = {}
        elif stage and line.startswith("  ") and not line.startswith("  model"):
            label, *numbers = line.strip().rsplit(None, 5) if line.count(",") else line.strip().rsplit(None, 1)
            tables[stage][label] = [float(n.replace(",", "")) for n in numbers]
    return tables


def test_plan_command_prints_the_plans_numbers(capsys):
    from rlhf.planner import GIB, plan_recipe
    from rlhf.recipe import load_recipe

    launch_file = REPO_ROOT / "recipes/launch/zero3.yaml"
    args = [str(PIPELINE), "run_dir=runs/x"]
    code = main(["plan", *args, "--launch", str(launch_file), "--num-processes", "2", "--device-memory-gb", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    # Building embedded:tiny on a fresh cache may log above the table (DeepSpeed's accelerator notice, for one).
    out = out[out.index("launch zero3: 2 process(es), ZeRO-3; GiB per device\n") :]
    plans = plan_recipe(load_recipe(PIPELINE, args[1:]), LaunchSpec.from_file(launch_file, 2))
    tables = table_rows(out.split("\nshipped launch configs")[0])
    assert list(tables) == [plan.stage for plan in plans] == ["sft", "reward", "ppo"]
    for plan in plans:
        rows = tables[plan.stage]
        for m in plan.models:
            assert rows[m.role] == [
                m.parameters,
                m.trainable,
                *(round(x / GIB, 3) for x in (m.weights, m.gradients, m.optimizer)),
            ]
        assert rows["total per device"] == [round(plan.total / GIB, 3)]
    ppo = tables["ppo"]
    # ZeRO-3 over 2 processes halves the frozen ref_policy like the policy (both 0.5 x the same weights).
    assert ppo["ref_policy"][2] == ppo["policy"][2]
    # Every shipped config is judged: fits when its largest stage plus the 1.5 GiB CUDA reserve is within 2 GiB.
    verdicts = {}
    for line in out.split("\nshipped launch configs")[1].splitlines()[1:]:
        words = line.split()
        fits = words[0] == "fits"
        name, worst = words[1 if fits else 2], float(words[-2])
        verdicts[name] = fits
        assert fits == (worst + 1.5 <= 2), line
    assert set(verdicts) == {"single", "ddp", "zero1", "zero2", "zero3", "zero3_offload", "two_nodes"}
    assert verdicts["single"] and not verdicts["zero2"]


def test_plan_command_refuses_a_missing_launch_config(capsys):
    assert main(["plan", str(PIPELINE), "--launch", "no/such.yaml"]) == 2
    assert "cannot read launch config" in capsys.readouterr().err


def test_implicit_reward_is_planned_as_two_causal_lms():
    """An implicit reward model (the shipped pipeline's) trains as dpo does (the model and its frozen reference, LM
    heads). In ppo its reference is ppo's own reference policy (both the sft model), so it adds one causal LM where a
    classifier reward model adds one model with a one-logit head; with a LoRA policy (whose reference is the policy with
    its adapter off) it brings its own reference."""
    from rlhf.planner import plan_recipe
    from rlhf.recipe import load_recipe

    launch = LaunchSpec("single", 1)
    implicit = {p.stage: p for p in plan_recipe(load_recipe(PIPELINE, ["run_dir=runs/x"]), launch, "cpu")}
    classifier = {
        p.stage: p
        for p in plan_recipe(load_recipe(PIPELINE, ["run_dir=runs/x", "reward.implicit=null"]), launch, "cpu")
    }
    sft_policy = next(m for m in implicit["sft"].models if m.role == "policy")
    reward = {m.role: m for m in implicit["reward"].models}
    assert set(reward) == {"policy", "ref_policy"} and implicit["reward"].stage == "reward"
    assert reward["policy"].parameters == reward["ref_policy"].parameters == sft_policy.parameters
    assert reward["ref_policy"].trainable == 0 and reward["policy"].trainable == sft_policy.parameters
    frozen = {m.role: m for m in implicit["ppo"].models}
    assert frozen["reward/learned"].parameters == frozen["ref_policy"].parameters == sft_policy.parameters
    assert "reward/learned ref" not in frozen
    assert "reward/learned ref" not in {m.role for m in classifier["ppo"].models}
    assert [m.role for m in classifier["reward"].models] == ["reward"]
    assert implicit["ppo"].total > classifier["ppo"].total
    lora = {
        p.stage: p
        for p in plan_recipe(
            load_recipe(PIPELINE, ["run_dir=runs/x", "ppo.model.lora={r: 8, alpha: 16}"]), launch, "cpu"
        )
    }
    frozen = {m.role: m for m in lora["ppo"].models}
    assert "ref_policy" not in frozen
    assert frozen["reward/learned ref"].parameters == frozen["reward/learned"].parameters
