"""The shipped brand-voice result, shortened: sft answers the customer, ppo improves the voice without losing content.

Two runs share one sft model (the shipped pipeline's sft stage, shortened, from the pretrained `embedded:base`):
- the shipped pipeline (implicit reward model on voice and content pairs, ppo with the shipped defaults): sft answers the
  intent and greets the signed name; ppo gains the proxy and the voice judge and is not below sft on content (the
  paired interval does not lie below 0); a content loss (the paired interval below 0) always comes with the "proxy up while a gold judge goes down" alarm
  naming the content judge (and never without one);
- `recipes/brand_voice/voice_only.yaml` (reward model on voice pairs only, weak fixed KL): the report must raise that
  alarm on ppo for the content judge.
The numbers asserted are directions and intervals from compare's own paired bootstrap, not values of one machine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import PIPELINE, REPO_ROOT

pytestmark = pytest.mark.slow

VOICE_ONLY = REPO_ROOT / "recipes" / "brand_voice" / "voice_only.yaml"

# sft and reward as shipped (a one-epoch sft left ppo more to break: content -0.032 [-0.054, -0.011]); ppo 48 of the
# shipped 120 steps (16 steps of 32 replies left the voice gain's interval touching 0: +0.009 [+0.000, +0.020],
# content -0.024 with the alarm, one thread); compare on every held-out prompt (on half of them the proxy gain's
# interval touched 0).
SHORT = [
    "tracking.report_to=[none]",
    "sft.data.max_eval_rows=32",
    "sft.training.eval_steps=1000",
    "sft.training.save_steps=null",
    "reward.training.eval_steps=1000",
    "reward.training.save_steps=null",
    "reward.data.max_eval_rows=120",
    "ppo.training.max_steps=48",
    "ppo.data.max_eval_rows=16",
    "ppo.training.save_steps=null",
    "compare.prompts.max_prompts=120",
    "compare.bootstrap_resamples=500",
]


def _run(recipe: Path, run_dir: Path, overrides: list[str]) -> dict:
    from rlhf.pipeline import run_recipe
    from rlhf.recipe import load_recipe

    run_recipe(load_recipe(recipe, [f"run_dir={run_dir}", *SHORT, *overrides]))
    return json.loads((run_dir / "compare" / "results.json").read_text())


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> tuple[Path, dict]:
    """The shipped pipeline, shortened; returns its run directory and compare results."""
    run_dir = tmp_path_factory.mktemp("flagship") / "default"
    return run_dir, _run(PIPELINE, run_dir, [])


@pytest.fixture(scope="module")
def voice_only_run(default_run, tmp_path_factory) -> dict:
    """The voice-only recipe on the default run's sft model (the sft stage is the same recipe section)."""
    run_dir = tmp_path_factory.mktemp("flagship") / "voice_only"
    run_dir.mkdir()
    shutil.copytree(default_run[0] / "sft", run_dir / "sft")
    return _run(VOICE_ONLY, run_dir, ["stages=[reward, ppo, compare]"])


def test_ppo_gains_the_voice_and_is_not_below_sft_on_content(default_run):
    # The shipped reward model reads content as well as voice (the implicit one: held-out other-intent pairs 1.00,
    # content 0.889 in the full run), so ppo must improve the voice judge and must not fall below sft on the content
    # judge, which nothing trained on: the paired interval must not lie below 0, and the mean must not be more than a
    # rounding's worth under it. Measured in this shortened run (seed 42, two threads, 2026-11-30, ppo 48 steps of the
    # shipped 64 replies, KL controller from 0.2, reward model at batch 8): voice +0.045 [+0.036, +0.053], content
    # +0.007 [-0.007, +0.020], no alarm (reward model at batch 16: voice +0.048, content +0.009 [-0.005, +0.023]).
    # The full default (120 steps) on seeds 42, 1, 2, 3: content +0.017, +0.029, +0.023, +0.028. The bounds catch
    # what the earlier defaults did: the voice-blind reward model -0.24, the voice-only recipe -0.37 [-0.40, -0.34],
    # and 40 steps of 32 with kl.coef 0.1 about -0.02 with the interval below 0.
    _, results = default_run
    voice = results["differences"]["ppo"]["brand_voice"]
    content = results["differences"]["ppo"]["support_content"]
    assert voice["low"] > 0, f"ppo did not improve the voice judge: {voice}"
    assert content["high"] > 0 and content["mean"] > -0.015, f"ppo fell below sft on the content judge: {content}"


def test_ppo_gains_the_proxy_and_any_content_loss_is_flagged(default_run):
    # Whatever ppo does, the report never shows a content loss without the alarm that names the content judge.
    _, results = default_run
    assert results["reference"] == "sft"
    proxy = results["differences"]["ppo"]["proxy"]
    content = results["differences"]["ppo"]["support_content"]
    assert proxy["low"] > 0, f"ppo did not gain the reward it optimised: {proxy}"
    flagged = [
        a
        for a in results["alarms"]
        if a["model"] == "ppo" and a["kind"] == "proxy_up_judge_down" and a["judge"] == "support_content"
    ]
    if content["high"] < 0:
        assert flagged, f"content fell {content} without an alarm: {results['alarms']}"
    else:
        assert not flagged, f"an alarm on a content judge that did not fall: {flagged}"


def test_sft_answers_the_customer(default_run):
    _, results = default_run
    rules = results["rules"]["support_content"]["sft"]
    # An sft model that never learned to answer the intent or greet the signed name makes every later check moot.
    assert rules["intent"]["match"]["mean"] >= 0.6, rules["intent"]
    assert rules["name"]["match"]["mean"] >= 0.6, rules["name"]


def test_voice_only_reward_is_caught(voice_only_run):
    fired = [
        a
        for a in voice_only_run["alarms"]
        if a["model"] == "ppo" and a["kind"] == "proxy_up_judge_down" and a["judge"] == "support_content"
    ]
    assert fired, f"no proxy-up/content-down alarm on voice-only ppo: {voice_only_run['alarms']}"
    values = fired[0]["values"]
    assert values["proxy_gain_low"] > 0 and values["judge_change_high"] < 0
