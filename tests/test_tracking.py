"""Tracking: metrics.jsonl always; TensorBoard and wandb (offline) when the recipe asks for them."""

from __future__ import annotations

import json
import math
import struct
import time
from pathlib import Path

import pytest

from rlhf.config import TrackingConfig
from rlhf.tracking import Tracker

from .conftest import DATA_DIR


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tensorboard_logged(log_dir: Path) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, str]]]:
    """What a TensorBoard event file holds, read back with tensorboard's own reader: scalars and texts by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    texts = {
        tag: {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors(tag)}
        for tag in events.Tags()["tensors"]
    }
    return scalars, texts


def wandb_records(log: Path) -> list:
    """The records of a wandb transaction log (`.wandb`), parsed.

    The log is a LevelDB-style record log (a 7-byte header ':W&B' + magic + version, then 32 KiB blocks of records,
    each with a 7-byte header: checksum, length, type 1 full / 2 first / 3 middle / 4 last); every record is a
    `wandb_internal_pb2.Record` protobuf. wandb has no offline reader of its own that does not upload.
    """
    from wandb.proto import wandb_internal_pb2

    data = log.read_bytes()
    assert data[:4] == b":W&B", f"{log} is not a wandb transaction log"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is zero padding
            pos += block - pos % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(run_dir: Path, timeout: float = 60.0) -> dict[int, dict]:
    """The history rows of an offline wandb run, read back from its `.wandb` transaction log, by step.

    `wandb.finish()` can return before wandb's service process has written the log (seen under load: a 7-byte file
    right after finish, the whole run a moment later), so this waits for the run's closing `exit` record.
    """
    [log] = run_dir.glob("*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(log)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        assert time.monotonic() < deadline, f"{log}: no exit record after {timeout:.0f} s"
        time.sleep(0.2)
    rows = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            rows[row["_step"]] = row
    return rows


def test_metrics_jsonl_gets_one_object_per_logged_step(tmp_path):
    tracker = Tracker(TrackingConfig(), tmp_path, {"seed": 1})
    tracker.log({"loss": 1.5, "lr": 1e-3, "note": "text is dropped"}, step=1)
    tracker.log({"loss": math.nan, "reward": math.inf, "count": 3}, step=2)
    tracker.close()
    first, second = read_jsonl(tmp_path / "metrics.jsonl")
    assert first["step"] == 1 and first["loss"] == 1.5 and first["lr"] == 1e-3
    assert "note" not in first and isinstance(first["time"], float)
    assert second["loss"] is None and second["reward"] is None  # non-finite values are kept, as null
    assert second["count"] == 3.0


def test_resume_keeps_rows_up_to_the_checkpoint_and_a_new_run_starts_over(tmp_path):
    tracker = Tracker(TrackingConfig(), tmp_path, {})
    for step in (1, 2, 3):
        tracker.log({"loss": 1.0}, step=step)
    tracker.close()
    tracker = Tracker(TrackingConfig(), tmp_path, {}, resume_step=2)  # step 3 is logged again after the checkpoint
    tracker.log({"loss": 0.5}, step=3)
    tracker.close()
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [(row["step"], row["loss"]) for row in rows] == [(1, 1.0), (2, 1.0), (3, 0.5)]
    tracker = Tracker(TrackingConfig(), tmp_path, {})
    tracker.log({"loss": 1.0}, step=9)
    tracker.close()
    assert [row["step"] for row in read_jsonl(tmp_path / "metrics.jsonl")] == [9]


def test_a_disabled_tracker_writes_nothing(tmp_path):
    out = tmp_path / "rank1"
    tracker = Tracker(TrackingConfig(report_to=["tensorboard"]), out, {}, enabled=False)
    tracker.log({"loss": 1.0}, step=1)
    tracker.log_samples([{"prompt": "p", "response": "r"}], step=1)
    tracker.close()
    assert not out.exists()


def test_tensorboard_holds_the_logged_values(tmp_path):
    tracker = Tracker(TrackingConfig(report_to="tensorboard"), tmp_path, {"seed": 1})
    tracker.log({"loss": 2.0, "reward/total": 0.25}, step=1)
    tracker.log({"loss": 1.5, "reward/total": math.nan}, step=2)  # a non-finite value is not written
    tracker.log_samples([{"prompt": "a | b", "response": "line\nbreak", "score": 0.5}], step=2)
    tracker.close()
    scalars, texts = tensorboard_logged(tmp_path / "tb")
    assert scalars == {"loss": {1: 2.0, 2: 1.5}, "reward/total": {1: 0.25}}
    assert (
        texts["samples/text_summary"][2]
        == "| prompt | response | score |\n|---|---|---|\n| a \\| b | line break | 0.500 |\n"
    )
    assert '"seed": 1' in texts["recipe/text_summary"][0]


@pytest.mark.slow  # wandb.init starts its service process: seconds, not milliseconds
def test_offline_wandb_holds_the_logged_values_and_the_sample_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = Tracker(TrackingConfig(report_to="wandb", project="rlhf-tests"), tmp_path, {"seed": 1})
    tracker.log({"loss": 2.0, "reward/total": 0.25}, step=1)
    tracker.log({"loss": 1.5, "reward/total": math.inf}, step=2)
    tracker.log_samples([{"prompt": "p", "response": "r", "score": 0.5}], step=3)
    tracker.close()
    [run] = (tmp_path / "wandb").glob("offline-run-*")
    history = wandb_history(run)
    scalars = {
        step: {k: v for k, v in row.items() if not k.startswith(("_", "samples/"))} for step, row in history.items()
    }
    assert scalars == {1: {"loss": 2.0, "reward/total": 0.25}, 2: {"loss": 1.5}, 3: {}}
    # The sample table is logged at its step as a reference to a table file in the run's media folder.
    assert (history[3]["samples/_type"], history[3]["samples/nrows"], history[3]["samples/ncols"]) == (
        "table-file",
        1,
        3,
    )
    table = json.loads((run / "files" / history[3]["samples/path"]).read_text())
    assert table == {"columns": ["prompt", "response", "score"], "data": [["p", "r", 0.5]]}


# Two steps of ppo on embedded:tiny with the brand-voice rules as reward, reporting everywhere.
PPO_RECIPE = """
stage: ppo
seed: 7
output_dir: {out}
model: {{name_or_path: embedded:tiny}}
data: {{train: {data}/ppo_prompts.jsonl, max_train_rows: 16, max_prompt_length: 64, max_length: 80}}
rewards:
  - {{name: voice_rules, function: brand_voice, weight: 1.0}}
value: {{mode: head}}
rollout: {{max_new_tokens: 8}}
update: {{epochs: 1}}
training: {{batch_size: 4, max_steps: 2, save_steps: null}}
log_samples_every: 1
tracking: {{report_to: [tensorboard, wandb], project: rlhf-tests}}
"""


@pytest.mark.slow
def test_a_ppo_run_logs_the_same_values_to_tensorboard_and_offline_wandb(tmp_path, monkeypatch):
    from rlhf.pipeline import run_recipe
    from rlhf.recipe import load_recipe

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    recipe = tmp_path / "ppo.yaml"
    recipe.write_text(PPO_RECIPE.format(out=tmp_path / "ppo", data=DATA_DIR))
    [out] = run_recipe(load_recipe(recipe))
    logged = {row["step"]: row for row in read_jsonl(out / "metrics.jsonl") if "reward/total" in row}
    assert sorted(logged) == [1, 2]
    scalars, texts = tensorboard_logged(out / "tb")
    [run] = (out / "wandb").glob("offline-run-*")
    history = wandb_history(run)
    for step, row in logged.items():
        for key in ("reward/total", "reward/voice_rules", "kl", "loss/policy", "response/length"):
            assert scalars[key][step] == pytest.approx(row[key], rel=1e-6), (step, key)  # TensorBoard keeps float32
            assert history[step][key] == row[key], (step, key)
        # Every step's samples: a table of prompts, responses and scores in both trackers.
        assert texts["samples/text_summary"][step].startswith("| prompt | response |")
        table = json.loads((run / "files" / history[step]["samples/path"]).read_text())
        assert table["columns"][:2] == ["prompt", "response"] and "voice_rules" in table["columns"]
        assert len(table["data"]) == history[step]["samples/nrows"] > 0
