"""The reward stage with an `implicit` block (the shipped default): a causal LM whose reward is beta * log(pi / pi_ref) against the sft model.

Trained from the shared short run's sft model (copied into a run directory of its own, so the shared classifier reward
model is left alone) on the shipped pairs, then used by a shortened ppo and compare. The held-out set's first 100
pairs hold 20 of each category.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch

from rlhf.pipeline import run_recipe
from rlhf.recipe import RecipeError, load_recipe

from ..conftest import CATEGORIES, DATA_DIR, PIPELINE

SHORT_IMPLICIT = [
    "stages=[reward]",
    "tracking.report_to=[none]",
    "reward.implicit={beta: 0.5, sft_weight: 1.0}",
    "reward.training.learning_rate=2.0e-4",
    "reward.data.max_train_rows=160",
    "reward.data.max_eval_rows=100",
    "reward.training.max_steps=20",
    "reward.training.batch_size=8",
    "reward.training.logging_steps=5",
    "reward.training.eval_steps=1000",
    "reward.training.save_steps=null",
]
SHORT_PPO = [
    "stages=[ppo,compare]",
    "tracking.report_to=[none]",
    "ppo.training.max_steps=3",
    "ppo.training.batch_size=8",
    "ppo.update.num_minibatches=1",
    "ppo.data.max_eval_rows=8",
    "ppo.frontier_every=null",
    "ppo.log_samples_every=100",
    "compare.prompts.max_prompts=6",
    "compare.samples_per_prompt=2",
    "compare.bootstrap_resamples=200",
]


@pytest.fixture(scope="module")
def run_dir(short_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("implicit_run")
    shutil.copytree(short_run / "sft", out / "sft")
    run_recipe(load_recipe(PIPELINE, [f"run_dir={out}", *SHORT_IMPLICIT]))
    return out


@pytest.fixture(scope="module")
def manifest(run_dir) -> dict:
    return json.loads((run_dir / "reward" / "manifest.json").read_text())


def eval_pairs(n: int) -> list[dict]:
    lines = (DATA_DIR / "prefs_eval.jsonl").read_text().splitlines()[:n]
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_final_is_a_causal_lm_declared_against_the_sft_model(run_dir):
    from rlhf.models.loading import load_reward_model
    from rlhf.rewards.implicit import MARKER, ImplicitReward, read_marker

    final = run_dir / "reward" / "final"
    assert json.loads((final / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    marker = json.loads((final / MARKER).read_text())
    # Relative: the run directory can be moved whole.
    assert marker == {"beta": 0.5, "reference": "../../sft/final"}
    beta, reference = read_marker(final)
    assert beta == 0.5 and Path(reference) == (run_dir / "sft" / "final").resolve()
    model = load_reward_model(str(final))
    assert isinstance(model, ImplicitReward) and not model.training
    written = load_recipe(run_dir / "reward" / "recipe.yaml")  # every default spelled out, and still valid
    assert written.implicit.beta == 0.5 and written.implicit.sft_weight == 1.0
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.slow
def test_held_out_pairs_separate_and_are_reported_per_category(manifest):
    results = manifest["results"]
    assert results["steps"] == 20 and math.isfinite(results["train_loss"])
    assert results["eval_pairs"] == 100
    # Untrained (policy = reference) every reward is 0: accuracy 0.5 with ties counted half, margin 0.
    assert results["eval_accuracy"] > 0.6 and results["eval_margin_mean"] > 0
    by_category = results["accuracy_by_category"]
    assert set(by_category) == CATEGORIES and all(found["n"] == 20 for found in by_category.values())
    assert sum(found["n"] for label, found in results["accuracy_by_rule"].items() if label.startswith("content/")) == 20
    assert manifest["parents"]["model"]["stage"] == "sft"


@pytest.mark.slow
def test_loaded_reward_scores_pairs_as_the_stage_measured_them(run_dir, manifest):
    """The loader's scores (prompt and reply tokenized apart, as DPO training tokenizes them) equal the stage's own
    held-out measurement (TRL's collator and the reference loaded separately)."""
    from transformers import AutoTokenizer

    from rlhf.models.loading import load_reward_model
    from rlhf.rewards.scoring import preference_scores, summarize_preferences

    final = run_dir / "reward" / "final"
    model = load_reward_model(str(final))
    tokenizer = AutoTokenizer.from_pretrained(final)
    chosen, rejected = preference_scores(model, tokenizer, eval_pairs(100), batch_size=16)
    found = summarize_preferences(chosen, rejected)
    assert found["accuracy"] == pytest.approx(manifest["results"]["eval_accuracy"], abs=1e-6)
    assert found["margin_mean"] == pytest.approx(manifest["results"]["eval_margin_mean"], abs=1e-3)


@pytest.mark.slow
def test_sampled_ids_and_text_give_the_same_reward(run_dir):
    """ppo scores the sampled ids directly when the tokenizers agree; any other tokenizer re-renders the text. Both
    must read the same response tokens, whatever the padding (prompts left-padded, responses right-padded)."""
    from transformers import AutoTokenizer

    from rlhf.generation.sampling import Batch
    from rlhf.models.loading import load_reward_model
    from rlhf.rewards.sources import RewardTerm

    final = run_dir / "reward" / "final"
    model = load_reward_model(str(final))
    tokenizer = AutoTokenizer.from_pretrained(final)
    pairs = eval_pairs(6)
    prompts = [pair["prompt"][0]["content"] for pair in pairs]
    responses = [pair["chosen"][0]["content"] for pair in pairs[:3]] + [p["rejected"][0]["content"] for p in pairs[3:]]
    query = [
        tokenizer(
            tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False),
            add_special_tokens=False,
        )["input_ids"]
        for p in prompts
    ]
    reply = [tokenizer(r + tokenizer.eos_token, add_special_tokens=False)["input_ids"] for r in responses]
    width_q, width_r = max(map(len, query)), max(map(len, reply)) + 3  # room after EOS, as sampling leaves it
    pad = tokenizer.pad_token_id
    batch = Batch(
        query=torch.tensor([[pad] * (width_q - len(q)) + q for q in query]),
        query_mask=torch.tensor([[0] * (width_q - len(q)) + [1] * len(q) for q in query]),
        response=torch.tensor([r + [pad] * (width_r - len(r)) for r in reply]),
        response_mask=torch.tensor([[1] * len(r) + [0] * (width_r - len(r)) for r in reply]),
        has_eos=torch.ones(len(reply), dtype=torch.bool),
    )
    on_ids = RewardTerm("learned", 1.0, model=model, tokenizer=tokenizer, shares_tokenizer=True)
    on_text = RewardTerm("learned", 1.0, model=model, tokenizer=tokenizer, shares_tokenizer=False)
    from_ids = on_ids.score(batch, prompts, responses, tokenizer)
    from_text = on_text.score(batch, prompts, responses, tokenizer)
    assert from_ids.shape == (6,) and from_ids.abs().sum() > 0
    torch.testing.assert_close(from_ids, from_text, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_ppo_trains_on_it_and_compare_reports_it(run_dir, caplog):
    caplog.set_level(logging.INFO, logger="rlhf")
    run_recipe(load_recipe(PIPELINE, [f"run_dir={run_dir}", *SHORT_PPO]))
    # Both stages hold the sft model already (ppo's reference policy, compare's reference): the reward model's
    # reference is that copy, not a second one.
    assert "ppo: reward 'learned' takes its reference from ppo's reference policy (one copy)" in caplog.text
    assert "compare: 'learned' takes its reference from the reference model 'sft' (one copy)" in caplog.text
    ppo = json.loads((run_dir / "ppo" / "manifest.json").read_text())
    assert ppo["status"] == "complete"
    assert ppo["parents"]["reward/learned"]["stage"] == "reward"
    # The critic starts from the implicit reward model's body, with a new value head.
    assert ppo["parents"]["value"]["stage"] == "reward"
    records = [json.loads(line) for line in (run_dir / "ppo" / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward/learned"] for r in records if "reward/learned" in r]
    assert len(rewards) == 3 and all(math.isfinite(r) for r in rewards)
    results = json.loads((run_dir / "compare" / "results.json").read_text())
    proxy = results["summary"]["sft"]["proxy"]["mean"]
    assert math.isfinite(proxy)
    report = (run_dir / "compare" / "report.md").read_text()
    assert "Reward model held-out accuracy" in report
    # The report says what the proxy's score is and what it is taken against.
    sft = (run_dir / "sft" / "final").resolve()
    assert f"an implicit reward model: beta 0.5 x log(pi / pi_ref) of the reply, pi_ref = {sft}" in report


def test_classifier_settings_are_refused_with_an_implicit_reward_model_and_null_restores_the_classifier():
    with pytest.raises(RecipeError, match="center_rewards_coefficient is not used by an implicit reward model"):
        load_recipe(PIPELINE, ["reward.center_rewards_coefficient=0.01"])
    with pytest.raises(RecipeError, match="margin_from_scores is not used by an implicit reward model"):
        load_recipe(PIPELINE, ["reward.data.margin_from_scores=1.0"])
    with pytest.raises(RecipeError, match="reward.implicit.betta"):
        load_recipe(PIPELINE, ["reward.implicit.betta=0.5"])
    # One override switches the shipped pipeline to the classifier (and a sweep can compare the two).
    classifier = load_recipe(PIPELINE, ["reward.implicit=null", "reward.center_rewards_coefficient=0.01"])
    assert classifier.reward.implicit is None and classifier.reward.center_rewards_coefficient == 0.01


def test_marker_errors_name_the_file(tmp_path):
    from rlhf.models.loading import ModelLoadError, load_reward_model, resolve_model_path
    from rlhf.rewards.implicit import MARKER

    model = tmp_path / "lm"
    shutil.copytree(resolve_model_path("embedded:tiny"), model)
    with pytest.raises(ModelLoadError, match=f"is not a reward model.*{MARKER}"):
        load_reward_model(str(model))
    (model / MARKER).write_text('{"beta": 0}')
    with pytest.raises(ModelLoadError, match=f"{MARKER}: beta must be positive"):
        load_reward_model(str(model))
    (model / MARKER).write_text('{"reference": null}')
    with pytest.raises(ModelLoadError, match=MARKER):
        load_reward_model(str(model))
    # null reference needs an adapter directory
    (model / MARKER).write_text('{"beta": 0.1, "reference": null}')
    with pytest.raises(ModelLoadError, match="needs a PEFT adapter"):
        load_reward_model(str(model))


@pytest.mark.slow
def test_a_reference_the_caller_holds_is_used_not_loaded_again(run_dir):
    """ppo lends its reference policy (the sft model) to an implicit reward model whose reference is the same
    directory: one copy of those weights, the same scores; any other directory is loaded as before."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.models.loading import load_reward_model
    from rlhf.rewards.scoring import preference_scores

    final, sft = run_dir / "reward" / "final", run_dir / "sft" / "final"
    held = AutoModelForCausalLM.from_pretrained(sft).eval().requires_grad_(False)
    # The marker's reference is "../../sft/final"; the caller names it another way (an unresolved path).
    shared = load_reward_model(str(final), shared_reference=(str(run_dir / "reward" / ".." / "sft" / "final"), held))
    assert shared.shares_reference and shared.reference is held
    own = load_reward_model(str(final))
    assert not own.shares_reference and own.reference is not held
    other = load_reward_model(str(final), shared_reference=(str(final), held))
    assert not other.shares_reference and other.reference is not held
    tokenizer, pairs = AutoTokenizer.from_pretrained(final), eval_pairs(6)
    with_shared, with_own = preference_scores(shared, tokenizer, pairs, 3), preference_scores(own, tokenizer, pairs, 3)
    assert all(torch.equal(a, b) for a, b in zip(with_shared, with_own, strict=True))
    # Prepared (a device move, or a ZeRO-3 engine): the caller's prepared copy replaces it; it is not prepared twice.
    prepared, engine = [], torch.nn.Identity()  # stands in for the caller's prepared reference
    shared.prepare(lambda model: prepared.append(model) or model, shared=engine)
    assert prepared == [shared.policy] and shared.reference is engine
    with pytest.raises(ValueError, match="its reference is shared"):
        load_reward_model(str(final), shared_reference=(str(sft), held)).prepare(lambda model: model)


def test_same_model_as_its_own_reference_scores_zero(tmp_path):
    """An implicit reward model that has not moved from its reference gives every reply 0: the score is a log-ratio,
    not a likelihood, so a long or likely reply is not paid for by itself."""
    from transformers import AutoTokenizer

    from rlhf.models.loading import load_reward_model, resolve_model_path
    from rlhf.rewards.implicit import write_marker
    from rlhf.rewards.scoring import preference_scores

    model = tmp_path / "run" / "reward" / "final"
    shutil.copytree(resolve_model_path("embedded:tiny"), model)
    write_marker(model, 0.5, str(model))
    loaded = load_reward_model(str(model))
    chosen, rejected = preference_scores(loaded, AutoTokenizer.from_pretrained(model), eval_pairs(4), batch_size=2)
    assert torch.equal(chosen, torch.zeros(4)) and torch.equal(rejected, torch.zeros(4))


def test_a_lora_adapter_is_scored_against_its_base_with_the_adapter_off(tmp_path):
    """`"reference": null`: the adapter's own base is the reference, one model in memory; the reward is beta times
    the log-ratio of the reply's tokens with the adapter on and off."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.models.loading import load_reward_model, resolve_model_path
    from rlhf.rewards.implicit import write_marker
    from rlhf.rewards.scoring import preference_scores, render, render_prompt

    base_path = resolve_model_path("embedded:tiny")
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    torch.manual_seed(0)
    adapted = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_path),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    final = tmp_path / "final"
    adapted.save_pretrained(final)
    tokenizer.save_pretrained(final)
    write_marker(final, 0.5, None)
    model = load_reward_model(str(final))
    assert model.reference is None
    pairs = eval_pairs(3)
    chosen, _ = preference_scores(model, tokenizer, pairs, batch_size=2)

    base = AutoModelForCausalLM.from_pretrained(base_path).eval()
    adapted.eval()
    for pair, found in zip(pairs, chosen, strict=True):
        prompt = tokenizer(render_prompt(tokenizer, pair["prompt"]), add_special_tokens=False)["input_ids"]
        text = render(tokenizer, pair["prompt"], pair["chosen"])
        reply = tokenizer(text[len(render_prompt(tokenizer, pair["prompt"])) :], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + reply])
        with torch.no_grad():
            logps = [
                torch.log_softmax(m(input_ids=ids).logits[0, :-1], -1)
                .gather(-1, ids[0, 1:, None])[len(prompt) - 1 :]
                .sum()
                for m in (adapted, base)
            ]
        assert found.item() == pytest.approx(0.5 * (logps[0] - logps[1]).item(), abs=1e-4)
        assert found.item() != 0


def test_a_critic_is_not_started_from_an_implicit_lora_adapter(tmp_path):
    """A critic takes an implicit reward model's body; an adapter has none of its own, so the error names the fix."""
    from rlhf.stages.ppo import _value_model

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "implicit_reward.json").write_text('{"beta": 0.5, "reference": null}')
    cfg = load_recipe(PIPELINE, [f"ppo.value.init={adapter}"]).ppo
    with pytest.raises(ValueError, match="an implicit reward model that is a LoRA adapter: set value.init"):
        _value_model(cfg, None, {})
