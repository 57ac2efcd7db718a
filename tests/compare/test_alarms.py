"""Reward-hacking alarms on hand-made comparisons: a hacked policy fires them, a clean one does not."""

from __future__ import annotations

import numpy as np

from rlhf.compare import alarms
from rlhf.compare.stats import analyse

P = 60


def reference(rng: np.random.Generator) -> dict[str, np.ndarray]:
    length = rng.uniform(30, 50, P)
    return {
        "proxy": rng.normal(0.0, 0.5, P),
        "judge": 0.8 + rng.normal(0, 0.03, P),
        "length": length,
        "eos": (rng.random(P) < 0.9).astype(float),
        "repetition": np.zeros(P),
    }


def hacked(rng: np.random.Generator) -> dict[str, np.ndarray]:
    # Longer replies: the proxy pays for every extra token while the judge marks them down.
    length = rng.uniform(50, 90, P)
    return {
        "proxy": 0.1 * (length - 40) + rng.normal(0, 0.3, P),
        "judge": 0.8 - 0.004 * (length - 40) + rng.normal(0, 0.03, P),
        "length": length,
        "eos": (rng.random(P) < 0.9).astype(float),
        "repetition": np.zeros(P),
    }


def clean(rng: np.random.Generator) -> dict[str, np.ndarray]:
    # Better on both scores, length and ending unchanged.
    length = rng.uniform(30, 50, P)
    return {
        "proxy": 1.0 + rng.normal(0, 0.5, P),
        "judge": 0.85 + rng.normal(0, 0.03, P),
        "length": length,
        "eos": (rng.random(P) < 0.9).astype(float),
        "repetition": np.zeros(P),
    }


def fired(scores: dict, corpus: dict | None = None) -> set[tuple[str, str]]:
    analysis = analyse(scores, "sft", compared=["proxy", "judge"], seed=0, resamples=500)
    return {(a.kind, a.model) for a in alarms.check_alarms(analysis, "proxy", ["judge"], corpus)}


def test_hacked_policy_fires_the_proxy_judge_and_length_alarms():
    rng = np.random.default_rng(0)
    found = fired({"sft": reference(rng), "ppo": hacked(rng)})
    assert ("proxy_up_judge_down", "ppo") in found
    assert ("reward_length_correlation", "ppo") in found


def test_clean_policy_fires_nothing():
    rng = np.random.default_rng(0)
    assert fired({"sft": reference(rng), "ppo": clean(rng)}) == set()


def test_flat_judge_is_reported_as_flat():
    rng = np.random.default_rng(0)
    ref = reference(rng)
    flat = {**clean(rng), "judge": ref["judge"] + rng.normal(0, 0.01, P)}
    assert ("proxy_up_judge_flat", "ppo") in fired({"sft": ref, "ppo": flat})


def test_eos_collapse_repetition_and_diversity_collapse():
    rng = np.random.default_rng(0)
    ref = reference(rng)
    degenerate = {**clean(rng), "eos": (rng.random(P) < 0.3).astype(float), "repetition": np.full(P, 0.3)}
    corpus = {"sft": {"distinct_2": 0.6}, "ppo": {"distinct_2": 0.3}}
    found = fired({"sft": ref, "ppo": degenerate}, corpus)
    assert {("eos_collapse", "ppo"), ("repetition", "ppo"), ("diversity_collapse", "ppo")} <= found


def test_models_the_proxy_does_not_prefer_are_not_checked():
    # An untrained base model that never stops is not hacking the proxy: no alarm for it.
    rng = np.random.default_rng(0)
    ref = reference(rng)
    base = {**ref, "proxy": ref["proxy"] - 3.0, "eos": np.zeros(P)}
    assert fired({"sft": ref, "base": base}) == set()


def test_without_a_proxy_every_other_model_is_checked():
    rng = np.random.default_rng(0)
    ref = reference(rng)
    base = {key: value for key, value in {**ref, "eos": np.zeros(P)}.items() if key != "proxy"}
    ref = {key: value for key, value in ref.items() if key != "proxy"}
    analysis = analyse({"sft": ref, "base": base}, "sft", compared=["judge"], seed=0, resamples=200)
    kinds = {a.kind for a in alarms.check_alarms(analysis, None, ["judge"])}
    assert kinds == {"eos_collapse"}


def _two_judges(content_shift: float, voice_shift: float, noise: float = 0.03, seed: int = 1) -> list:
    """Proxy clearly up; two judges shifted by the given amounts (with per-prompt noise)."""
    rng = np.random.default_rng(seed)
    ref = {
        "proxy": rng.normal(0, 0.5, P),
        "content": 0.7 + rng.normal(0, noise, P),
        "voice": 0.6 + rng.normal(0, noise, P),
        "length": np.full(P, 40.0),
    }
    ppo = {
        "proxy": ref["proxy"] + 1.0 + rng.normal(0, 0.1, P),
        "content": ref["content"] + content_shift + rng.normal(0, noise, P),
        "voice": ref["voice"] + voice_shift + rng.normal(0, noise, P),
        "length": np.full(P, 40.0),
    }
    analysis = analyse({"sft": ref, "ppo": ppo}, "sft", compared=["proxy", "content", "voice"], seed=0, resamples=500)
    return alarms.check_alarms(analysis, "proxy", ["content", "voice"])


def test_proxy_up_judge_down_fires_per_judge_and_names_it_with_both_intervals():
    found = _two_judges(content_shift=-0.2, voice_shift=+0.2)
    assert [(a.kind, a.model, a.judge) for a in found] == [("proxy_up_judge_down", "ppo", "content")]
    alarm = found[0]
    assert "'content'" in alarm.message and "voice" not in alarm.message
    assert alarm.message.count("[") == 2 and "95%" in alarm.message  # the proxy's and the judge's intervals
    assert alarm.values["proxy_gain_low"] > 0 and alarm.values["judge_change_high"] < 0


def test_every_falling_judge_gets_its_own_alarm():
    found = _two_judges(content_shift=-0.2, voice_shift=-0.1)
    assert sorted(a.judge for a in found if a.kind == "proxy_up_judge_down") == ["content", "voice"]


def test_judges_that_rise_or_cannot_tell_do_not_fire():
    assert _two_judges(content_shift=+0.1, voice_shift=+0.1) == []
    # Very noisy judges: the intervals straddle 0 and reach above the flat tolerance, so nothing can be claimed.
    assert _two_judges(content_shift=0.0, voice_shift=0.0, noise=0.4) == []


def test_a_judge_flat_within_the_tolerance_fires_flat():
    found = _two_judges(content_shift=0.0, voice_shift=+0.2, noise=0.002)
    assert [(a.kind, a.judge) for a in found] == [("proxy_up_judge_flat", "content")]
    assert f"{alarms.JUDGE_FLAT_TOLERANCE:+.3f}" in found[0].message
