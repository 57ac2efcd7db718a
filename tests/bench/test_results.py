"""The result record carries every required field; results are appended one JSON object a line."""

import json

from rlhf.bench import results

PPO_MEASURES = {
    "settings": {"size": "tiny"},
    "train_s": 1.0,
    "flops": 10,
    "achieved_gflops": 1e-8,
    "pct_of_ceiling": 0.1,
    "matmul_ceiling_gflops": {"before": 100.0, "after": 110.0},
    "peak_rss_mb": 500.0,
    "episodes_per_s": 8.0,
    "gen_tokens_per_s": 384.0,
    "phase_s": {"generation": 0.5},
    "forward_s": {},
    "flops_trl_accounting": {},
}


def test_record_has_every_required_field():
    rec = results.record("ppo", PPO_MEASURES, load_before=[0.5, 0.5, 0.5])
    assert results.missing_fields(rec) == []
    assert rec["machine"]["load_average_before"] == [0.5, 0.5, 0.5]
    assert len(rec["machine"]["load_average_after"]) == 3
    assert {"torch", "transformers", "python"} <= set(rec["versions"])
    assert set(rec["git"]) == {"commit", "dirty"}
    json.dumps(rec)  # serialisable as it is


def test_missing_fields_are_named():
    measures = {k: v for k, v in PPO_MEASURES.items() if k not in ("episodes_per_s", "peak_rss_mb")}
    rec = results.record("ppo", measures, load_before=[0.0, 0.0, 0.0])
    assert sorted(results.missing_fields(rec)) == ["episodes_per_s", "peak_rss_mb"]


def test_append_writes_one_line_per_record(tmp_path):
    path = tmp_path / "bench" / "results.jsonl"
    results.append([{"a": 1}, {"b": 2}], path)
    results.append([{"c": 3}], path)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"a": 1}, {"b": 2}, {"c": 3}]
