"""Prompt-row metadata (`info`) reaches programmatic rewards: in the reward terms, in compare and through ppo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlhf.rewards.sources import RewardTerm, load_prompt_info, load_reward_function, row_info, takes_info
from tests.compare import info_probe


def _write_prompts(path: Path, n: int, offset: int = 0) -> Path:
    rows = [
        {"prompt": f"Where is my order [{i}]? It has been {i % 5 + 2} days.", "tag": str(i), "intent": "late_order"}
        for i in range(offset, offset + n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_takes_info_is_read_from_the_signature():
    assert takes_info(info_probe.score) and not takes_info(info_probe.score_without_info)
    assert takes_info(load_reward_function("support_content")) and not takes_info(load_reward_function("brand_voice"))
    assert row_info({"prompt": "x", "messages": [], "intent": "refund", "order_id": None}) == {
        "intent": "refund",
        "order_id": None,
    }


def test_reward_terms_pass_info_only_to_functions_that_take_it():
    batch = None  # programmatic terms never look at token ids
    prompts, replies = ["a [1]", "b [2]"], ["x", ""]
    with_info = RewardTerm("probe", 1.0, function=info_probe.score)
    without = RewardTerm("plain", 1.0, function=info_probe.score_without_info)
    assert with_info.wants_info and not without.wants_info
    scores = with_info.score(batch, prompts, replies, None, [{"tag": "1"}, {"tag": "2"}])
    assert scores.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="metadata of another row"):
        with_info.score(batch, prompts, replies, None, [{"tag": "2"}, {"tag": "1"}])
    assert without.score(batch, prompts, replies, None, [{"tag": "1"}, {"tag": "2"}]).tolist() == [1.0, 0.0]


def test_load_prompt_info_keeps_file_order_and_the_row_limit(tmp_path):
    path = _write_prompts(tmp_path / "p.jsonl", 5)
    assert [row["tag"] for row in load_prompt_info(str(path), "train", None)] == ["0", "1", "2", "3", "4"]
    assert [row["tag"] for row in load_prompt_info(str(path), "train", 2)] == ["0", "1"]
    assert "prompt" not in load_prompt_info(str(path), "train", 1)[0]


def test_compare_load_prompts_keeps_the_extra_columns(tmp_path):
    from rlhf.compare.run import load_prompts
    from rlhf.config import PromptsConfig

    path = _write_prompts(tmp_path / "p.jsonl", 4)
    prompts, infos = load_prompts(PromptsConfig(path=str(path), max_prompts=3))
    assert len(prompts) == len(infos) == 3
    for messages, info in zip(prompts, infos, strict=True):
        assert f"[{info['tag']}]" in messages[-1]["content"] and info["intent"] == "late_order"


@pytest.mark.slow
def test_ppo_passes_each_rows_info_through_shuffled_batches(tmp_path):
    """A short ppo run whose only reward checks that each shuffled prompt arrives with its own row's metadata."""
    from rlhf.pipeline import run_recipe
    from rlhf.recipe import load_recipe

    train = _write_prompts(tmp_path / "train.jsonl", 16)
    held_out = _write_prompts(tmp_path / "eval.jsonl", 4, offset=100)
    recipe = tmp_path / "ppo.yaml"
    recipe.write_text(
        f"""
stage: ppo
seed: 3
output_dir: {tmp_path / "out"}
model: {{name_or_path: embedded:tiny}}
data: {{train: {train}, eval: {held_out}, max_prompt_length: 48, max_length: 64}}
rewards:
  - {{name: probe, function: "tests.compare.info_probe:score", weight: 1.0}}
  - {{name: content, function: support_content, weight: 0.0}}
tracking: {{report_to: [none]}}
value: {{mode: head}}
rollout: {{max_new_tokens: 4, temperature: 1.0}}
update: {{epochs: 1, num_minibatches: 1}}
training: {{learning_rate: 1.0e-4, batch_size: 4, max_steps: 5}}
"""
    )
    info_probe.SEEN.clear()
    torch.manual_seed(0)
    run_recipe(load_recipe(recipe, []))
    seen_tags = [tag for _, tag in info_probe.SEEN]
    train_tags = [t for t in seen_tags if int(t) < 100]
    assert len(train_tags) == 5 * 4  # every rollout of every step was scored with its row's info
    assert len(set(train_tags[:16])) == 16  # one epoch of 4 steps covers 16 distinct rows (a shuffle, not a repeat)
    assert train_tags[:4] != ["0", "1", "2", "3"]  # shuffled order
    assert sorted(t for t in seen_tags if int(t) >= 100) == sorted(
        ["100", "101", "102", "103"] * 2
    )  # eval: both models
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "eval_policy_content_mean" in manifest["results"]


@pytest.mark.slow
@pytest.mark.distributed
def test_ppo_info_follows_each_ranks_share_of_the_batch(tmp_path):
    """Two DDP processes: each scores its own share of every step with the rows' own metadata (the probe raises
    otherwise), and together they cover each step's global batch once."""
    from tests.distributed.launching import child_env, finish, launch_command, start

    train = _write_prompts(tmp_path / "train.jsonl", 16)
    recipe = tmp_path / "ppo.yaml"
    recipe.write_text(
        f"""
stage: ppo
seed: 3
output_dir: {tmp_path / "out"}
model: {{name_or_path: embedded:tiny}}
data: {{train: {train}, max_prompt_length: 48, max_length: 64}}
rewards:
  - {{name: probe, function: "tests.compare.info_probe:score", weight: 1.0}}
tracking: {{report_to: [none]}}
value: {{mode: head}}
rollout: {{max_new_tokens: 4, temperature: 1.0}}
update: {{epochs: 1, num_minibatches: 1}}
training: {{learning_rate: 1.0e-4, batch_size: 4, max_steps: 2, save_steps: null}}
"""
    )
    log = tmp_path / "probe.log"
    command = launch_command("ddp", ["-m", "rlhf", "run", str(recipe)])
    finish([start(command, tmp_path / "launch.log", child_env(INFO_PROBE_LOG=str(log)))], [tmp_path / "launch.log"])
    lines = [line.split() for line in log.read_text().splitlines()]
    by_rank = {rank: [tag for r, tag in lines if r == rank] for rank in ("0", "1")}
    assert len(by_rank["0"]) == len(by_rank["1"]) == 2 * 4  # 2 steps x 4 rollouts per rank
    for step in range(2):
        share0 = set(by_rank["0"][step * 4 : step * 4 + 4])
        share1 = set(by_rank["1"][step * 4 : step * 4 + 4])
        assert len(share0 | share1) == 8  # the ranks split the global batch of 8 distinct rows
