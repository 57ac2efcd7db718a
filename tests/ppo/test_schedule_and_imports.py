"""The ppo loop's own learning-rate schedules match transformers' step by step, and a one-process ppo run trains
without importing what it does not use (datasets, peft, deepspeed: about 120 MB of resident memory together)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rlhf.ppo.schedule import SCHEDULES, learning_rate_schedule

from ..conftest import DATA_DIR


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize(("warmup", "total"), [(0, 10), (3, 10), (5, 5)])
def test_schedules_follow_transformers(name, warmup, total):
    from transformers import get_scheduler

    def optimizer():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)

    ours = learning_rate_schedule(ours_opt := optimizer(), name, warmup, total)
    theirs = get_scheduler(name, theirs_opt := optimizer(), num_warmup_steps=warmup, num_training_steps=total)
    for _ in range(total + 2):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(theirs_opt.param_groups[0]["lr"], abs=1e-12)
        ours_opt.step(), theirs_opt.step()
        ours.step(), theirs.step()
    resumed = learning_rate_schedule(optimizer(), name, warmup, total)
    resumed.load_state_dict(ours.state_dict())
    assert resumed.last_epoch == ours.last_epoch


RUN = """
import sys
from rlhf.config import PPOStage
from rlhf.stages import ppo

seen = {{}}
save = ppo._save_policy

def spy(*args, **kwargs):  # the training loop is over; transformers' own save_pretrained may import more
    seen.update({{name: name in sys.modules for name in ("datasets", "peft", "deepspeed", "trl")}})
    return save(*args, **kwargs)

ppo._save_policy = spy
ppo.run(PPOStage.model_validate({{
    "stage": "ppo", "seed": 1, "output_dir": {out!r},
    "model": {{"name_or_path": "embedded:tiny"}},
    "data": {{"train": {data!r}, "max_train_rows": 8, "max_prompt_length": 48, "max_length": 64}},
    "rewards": [{{"name": "voice_rules", "function": "brand_voice"}}],
    "value": {{"mode": "head"}},
    "rollout": {{"max_new_tokens": 4}},
    "training": {{"batch_size": 4, "max_steps": 1, "save_steps": None}},
    "tracking": {{"report_to": ["none"]}},
}}))
print("LOADED", sorted(name for name, loaded in seen.items() if loaded))
"""


def test_a_one_process_ppo_run_imports_no_unused_library(tmp_path):
    script = RUN.format(out=str(tmp_path / "out"), data=str(DATA_DIR / "ppo_prompts.jsonl"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout, proc.stdout
