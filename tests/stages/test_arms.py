"""The arms recipe, shortened, with a fixed seed: dpo, grpo (a named arm of the ppo stage) and best-of-n beat sft on
the held-out proxy reward, side by side in one compare report.

Shortened: sft and reward train briefly from embedded:tiny (cached, nothing to pretrain), dpo takes 20 steps on 320
pairs, the grpo arm 16 steps of 8 prompts x 4 replies, and compare answers 48 held-out prompts (4 replies each) with
sft, dpo, grpo and sft's best of 4. The
missing-EOS penalty is off here: with 20 sft steps most replies run to the token limit, and the penalty (which the
held-out proxy does not see) would be most of what grpo learns.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.pipeline import run_recipe
from rlhf.recipe import load_recipe

from ..conftest import REPO_ROOT

ARMS = REPO_ROOT / "recipes" / "brand_voice" / "arms.yaml"
MIN_GAIN = 0.04

pytestmark = pytest.mark.slow

SHORT = [
    "tracking.report_to=[none]",
    "stages=[sft,reward,dpo,grpo,compare]",
    "sft.model.name_or_path=embedded:tiny",
    "sft.data.max_train_rows=320",
    "sft.training.max_steps=20",
    "sft.training.eval_steps=1000",
    "sft.training.save_steps=null",
    "reward.data.max_train_rows=320",
    "reward.training.max_steps=20",
    "reward.training.eval_steps=1000",
    "reward.training.save_steps=null",
    "dpo.data.max_train_rows=320",
    "dpo.data.max_eval_rows=40",
    "dpo.training.max_steps=20",
    "dpo.training.eval_steps=1000",
    "dpo.training.save_steps=null",
    "arms.grpo.rollout.missing_eos_penalty=null",
    "arms.grpo.training.max_steps=16",
    "arms.grpo.training.learning_rate=5.0e-4",
    "arms.grpo.training.save_steps=null",
    "arms.grpo.data.max_eval_rows=16",
    "compare.models=[{name: sft, path: 'stage:sft'}, {name: dpo, path: 'stage:dpo'}, {name: grpo, path: 'stage:grpo'}]",
    "compare.best_of_n.n=[4]",
    "compare.prompts.max_prompts=48",
    "compare.bootstrap_resamples=200",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("arms")
    run_recipe(load_recipe(ARMS, [f"run_dir={out}", *SHORT]))
    return out


def test_grpo_dpo_and_best_of_n_beat_sft_on_the_held_out_proxy(run_dir):
    results = json.loads((run_dir / "compare" / "results.json").read_text())
    assert list(results["summary"]) == ["sft", "sft-bo4", "dpo", "grpo"]
    gains = {arm: results["differences"][arm]["proxy"] for arm in ("grpo", "sft-bo4", "dpo")}
    # dpo (beta 0.5 with the chosen replies' likelihood term, 20 steps on 320 pairs): measured +0.040 [+0.024,
    # +0.054] at seed 42 (2026-11-30, 4 replies per prompt); without the likelihood term the shipped settings of the
    # last session stood still (-0.040 [-0.150, +0.030]) and a larger learning rate collapsed the policy.
    assert gains["dpo"]["low"] > 0, gains
    # A policy that did not learn samples what sft samples (same seed): a paired gain of exactly 0. Measured at seed
    # 42 (2026-11-30, one reply per prompt; with four: grpo +0.279 [+0.228, +0.343], best-of-4 +0.384 [+0.329,
    # +0.443]) (proxy sd over sft's replies 0.47): grpo +0.226 [+0.113, +0.348] at KL 11.7 nats (with the grpo
    # arm at seed 7: +0.129 [-0.005, +0.248]), best-of-4 +0.328 [+0.220, +0.430] at KL 0.59. lr 1e-4 gave grpo only
    # +0.046 [-0.064, +0.138] in 16 steps. GRPO's interval is too wide to demand that it excludes 0 on another
    # machine's trajectory; its mean must clear MIN_GAIN (about a tenth of sft's sd, a third of the lower seed's gain).
    assert gains["grpo"]["mean"] >= MIN_GAIN, gains
    assert gains["sft-bo4"]["low"] > 0, gains
    assert results["summary"]["grpo"]["kl"]["mean"] > 0
    assert 0 < results["best_of_n"]["sft-bo4"]["kl_measured"]["mean"] <= results["best_of_n"]["sft-bo4"]["kl_bound"]


def test_the_grpo_arm_is_a_critic_free_ppo_stage_in_its_own_folder(run_dir):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    manifest = json.loads((run_dir / "grpo" / "manifest.json").read_text())
    assert manifest["stage"] == "ppo" and manifest["parents"]["policy"]["stage"] == "sft"
    assert "value" not in manifest["parents"]
    assert manifest["results"]["episodes"] == 16 * 8 * 4
    saved = load_file(run_dir / "grpo" / "checkpoints" / "checkpoint-16" / "accelerate" / "model.safetensors")
    assert all(name.startswith("policy.") for name in saved)  # no critic, no value head
    rows = [json.loads(line) for line in (run_dir / "grpo" / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "loss/policy" in row]
    assert len(steps) == 16 and all("loss/kl" in row and "loss/value" not in row for row in steps)
    AutoModelForCausalLM.from_pretrained(run_dir / "grpo" / "final")
