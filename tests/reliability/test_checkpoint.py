"""rlhf.checkpoint: atomic directories, the completeness marker, pruning, RNG states and the resume fingerprint."""

from __future__ import annotations

import json
import logging
import random

import pytest

from rlhf import checkpoint
from rlhf.checkpoint import MARKER, ResumeError
from rlhf.config import SFTStage


def stage(tmp_path, **changes) -> SFTStage:
    train = tmp_path / "train.jsonl"
    if not train.exists():
        train.write_text('{"prompt": "a", "completion": "b"}\n')
    data = {"stage": "sft", "output_dir": str(tmp_path / "out"), "data": {"train": str(train)}}
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return SFTStage.model_validate(data)


def write(root, step, fingerprint=None, complete=True):
    path = checkpoint.step_dir(root, step)
    path.mkdir(parents=True)
    (path / "weights.bin").write_bytes(b"w" * step)
    if complete:
        checkpoint.write_marker(path, fingerprint or {}, step)
    return path


def test_atomic_directory_appears_complete_only_after_the_block(tmp_path):
    target = checkpoint.step_dir(tmp_path, 3)
    with checkpoint.atomic_directory(target, {"recipe": {}}, 3) as tmp:
        (tmp / "state.bin").write_bytes(b"x")
        assert ".tmp-" in tmp.name and not target.exists()
        assert checkpoint.latest_complete(tmp_path) is None
    assert (target / "state.bin").read_bytes() == b"x"
    assert checkpoint.read_marker(target)["step"] == 3
    assert checkpoint.latest_complete(tmp_path) == target
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-3"]


def test_atomic_directory_failure_leaves_nothing_and_keeps_the_old_checkpoint(tmp_path):
    old = write(tmp_path, 2)
    with (
        pytest.raises(RuntimeError, match="killed mid-write"),
        checkpoint.atomic_directory(checkpoint.step_dir(tmp_path, 4), {}, 4) as tmp,
    ):
        (tmp / "state.bin").write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-2"]
    assert checkpoint.latest_complete(tmp_path) == old


def test_atomic_directory_replaces_a_checkpoint_of_the_same_step(tmp_path):
    write(tmp_path, 2)
    with checkpoint.atomic_directory(checkpoint.step_dir(tmp_path, 2), {}, 2) as tmp:
        (tmp / "new.bin").write_bytes(b"n")
    assert sorted(p.name for p in checkpoint.step_dir(tmp_path, 2).iterdir()) == sorted([MARKER, "new.bin"])


def test_latest_complete_ignores_temporary_unmarked_and_corrupt_markers(tmp_path):
    good = write(tmp_path, 2)
    write(tmp_path, 4, complete=False)  # killed while the Trainer was writing it
    (tmp_path / "checkpoint-6.tmp-99").mkdir()  # killed inside atomic_directory
    corrupt = write(tmp_path, 8, complete=False)
    (corrupt / MARKER).write_text('{"complete": tr')  # cut short: unreadable, so incomplete
    (tmp_path / "checkpoint-x").mkdir()
    assert checkpoint.latest_complete(tmp_path) == good
    assert checkpoint.latest_complete(tmp_path / "missing") is None


def test_prune_keeps_the_newest_complete_and_protected_ones(tmp_path):
    for step in (1, 2, 3, 4):
        write(tmp_path, step)
    write(tmp_path, 5, complete=False)
    (tmp_path / "checkpoint-6.tmp-1").mkdir()
    (tmp_path / "notes").mkdir()  # not ours: untouched
    deleted = checkpoint.prune(tmp_path, keep=2, protect=(checkpoint.step_dir(tmp_path, 1),))
    assert sorted(p.name for p in deleted) == ["checkpoint-2", "checkpoint-5", "checkpoint-6.tmp-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1", "checkpoint-3", "checkpoint-4", "notes"]
    assert checkpoint.prune(tmp_path, keep=None) == []
    assert len(checkpoint.prune(tmp_path, keep=5)) == 0


def test_rng_states_round_trip_with_a_generator():
    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(5)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    states = checkpoint.save_rng_states(generator)
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    generator.manual_seed(9)
    checkpoint.load_rng_states(states, generator)
    assert (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=generator).item(),
    ) == expected
    with pytest.raises(ResumeError, match="no sampling-generator state"):
        checkpoint.load_rng_states({k: v for k, v in states.items() if k != "generator"}, generator)


def test_fingerprint_ignores_resume_irrelevant_keys_and_data_paths(tmp_path):
    base = checkpoint.resume_fingerprint(stage(tmp_path))
    moved = tmp_path / "moved.jsonl"
    moved.write_text((tmp_path / "train.jsonl").read_text())
    same = stage(
        tmp_path,
        training__max_steps=50,
        training__logging_steps=3,
        training__save_steps=7,
        tracking__report_to=["tensorboard"],
        output_dir=str(tmp_path / "elsewhere"),
        resume=False,
        data__train=str(moved),
    )
    assert checkpoint.fingerprint_differences(base, checkpoint.resume_fingerprint(same)) == []
    assert base["length"] == {"training.max_steps": None, "training.epochs": 1.0}


def test_fingerprint_differences_name_the_changed_key_and_data(tmp_path):
    base = checkpoint.resume_fingerprint(stage(tmp_path), {"model": {"stage": "sft", "recipe_sha256": "a"}})
    (tmp_path / "train.jsonl").write_text('{"prompt": "a", "completion": "c"}\n')
    changed = checkpoint.resume_fingerprint(
        stage(tmp_path, training__learning_rate=0.5), {"model": {"stage": "sft", "recipe_sha256": "b"}}
    )
    lines = checkpoint.fingerprint_differences(base, changed)
    assert "training.learning_rate: 1e-05 in the checkpoint, 0.5 now" in lines
    assert any(line.startswith("data file 'train' has different content") for line in lines)
    assert "parent artifact model.recipe_sha256: 'a' in the checkpoint, 'b' now" in lines


def test_prepare_resume(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rlhf")
    cfg = stage(tmp_path)
    fingerprint = checkpoint.resume_fingerprint(cfg)
    root = tmp_path / "checkpoints"
    assert checkpoint.prepare_resume(root, fingerprint, True) is None  # fresh directory: a fresh start
    write(root, 2, fingerprint)
    write(root, 4, complete=False)
    assert checkpoint.prepare_resume(root, fingerprint, True) == checkpoint.step_dir(root, 2)
    assert not checkpoint.step_dir(root, 4).exists()

    longer = checkpoint.resume_fingerprint(stage(tmp_path, training__max_steps=100))
    assert checkpoint.prepare_resume(root, longer, True) == checkpoint.step_dir(root, 2)
    assert "with a different run length" in caplog.text

    other = checkpoint.resume_fingerprint(stage(tmp_path, seed=1))
    expected = r"cannot resume from .*checkpoint-2.*\n    seed: 42 in the checkpoint, 1 now"
    with pytest.raises(ResumeError, match=expected):
        checkpoint.prepare_resume(root, other, True)
    assert checkpoint.prepare_resume(root, other, False) is None  # resume=false: start over
    assert not root.exists()


def test_marker_is_json_with_step_and_fingerprint(tmp_path):
    path = write(tmp_path, 7, {"recipe": {"seed": 1}})
    marker = json.loads((path / MARKER).read_text())
    assert marker["complete"] is True and marker["step"] == 7 and marker["fingerprint"] == {"recipe": {"seed": 1}}


def test_discard_after_removes_later_checkpoints_only(tmp_path):
    for step in (2, 4, 6):
        write(tmp_path, step)
    (tmp_path / "checkpoint-8.tmp-3").mkdir()
    (tmp_path / "notes").mkdir()
    assert sorted(p.name for p in checkpoint.discard_after(tmp_path, 2)) == ["checkpoint-4", "checkpoint-6"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-8.tmp-3", "notes"]
