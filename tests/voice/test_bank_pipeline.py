"""The second brand end to end, shortened: Harbourstone Bank's raw logs -> the pairs stage -> sft -> reward -> ppo ->
compare on the embedded default model, the shipped recipe as it is. ppo, trained on the learned reward model alone
(the spec is logged at weight 0), beats sft on the bank spec's judge with a paired interval above 0 (issue 16). The
spec labelled the pairs, so the gain shows ppo learned the bank's rules from them; the report says so.

Measured (one seed, two torch threads, 4 replies x 117 held-out prompts): ppo - sft +0.041 [+0.029, +0.052], no
alarm. Over three seeds of the full recipe (`rlhf sweep recipes/bank_voice/pipeline.yaml "seed=[42,1,2]"`): +0.014
[+0.008, +0.022] over seeds and prompts, every seed's own interval above 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.compare.diversity import corpus_distinct_n, words
from rlhf.pipeline import run_recipe
from rlhf.recipe import load_recipe

BANK = Path(__file__).resolve().parents[2] / "recipes" / "bank_voice"

pytestmark = pytest.mark.slow

SHORT = [
    "tracking.report_to=[none]",
    "sft.training.epochs=4",
    "reward.training.max_steps=40",
    "ppo.data.max_eval_rows=16",
    "compare.bootstrap_resamples=500",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    # The shipped recipe as it is, from the raw logs: its pairs stage writes the data the later stages read.
    out = tmp_path_factory.mktemp("bank") / "run"
    run_recipe(load_recipe(BANK / "pipeline.yaml", [f"run_dir={out}", *SHORT]))
    return out


def test_bank_report_states_what_the_judge_shares_and_raises_no_reward_alarm(run_dir):
    results = json.loads((run_dir / "compare" / "results.json").read_text())
    shares = {s["name"]: s["statement"] for s in results["shares"]}
    assert "labelled the preference pairs" in shares["bank_voice"]
    # The content judge beside it reads the message only (measured here: +0.016 [-0.006, +0.033], no alarm).
    assert shares["support_reply"].startswith("Nothing with the training labels")
    assert set(results["rules"]["support_reply"]["ppo"]) == {
        "topic",
        "name",
        "no_invented_name",
        "references",
        "coherence",
    }
    # compare read the held-out prompts the pairs stage wrote in this run
    written = json.loads((run_dir / "pairs" / "final" / "summary.json").read_text())["files"]["eval_prompts"]
    assert results["n_prompts"] == written
    kinds = {alarm["kind"] for alarm in results["alarms"]}
    assert kinds <= {"diversity_collapse"}, results["alarms"]
    if kinds:
        # Measured: ppo's corpus distinct-2 0.147 against sft's 0.210, which garbled words inflate; the bank's own
        # on-voice replies (its agents' templates) score about 0.10. Fewer distinct bigrams than that would be a
        # collapse; as many is the bank's template voice.
        replies = [
            json.loads(line)["messages"][-1]["content"]
            for line in (run_dir / "pairs" / "final" / "sft_train.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        agents = corpus_distinct_n([words(reply) for reply in replies[: results["n_prompts"]]], 2)
        assert results["corpus"]["ppo"]["distinct_2"] >= agents, (results["corpus"], agents)


def test_ppo_beats_sft_on_the_bank_judge(run_dir):
    # Measured with the shipped 4 replies per prompt: +0.041 [+0.029, +0.052] in this shortened run (two torch
    # threads, as in CI), and over three seeds of the full recipe +0.019 [+0.009, +0.029], +0.011 [+0.002, +0.020],
    # +0.013 [+0.004, +0.023]. With one reply per prompt the same shortened run had swung between +0.035 [+0.015,
    # +0.054] (one thread) and +0.002 [-0.021, +0.027] (two): most of that was the sampling of the compared replies.
    results = json.loads((run_dir / "compare" / "results.json").read_text())
    assert results["samples_per_prompt"] == 4
    difference = results["differences"]["ppo"]["bank_voice"]
    assert difference["low"] > 0, difference
