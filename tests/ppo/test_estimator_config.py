"""The recipe keys of the advantage estimators: what each needs, and what it never reads (errors, not ignored)."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from rlhf.cli import main
from rlhf.config import PPOStage

from ..conftest import DATA_DIR

BASE = {
    "stage": "ppo",
    "output_dir": "/tmp/unused",
    "data": {"train": str(DATA_DIR / "ppo_prompts.jsonl")},
    "rewards": [{"name": "voice_rules", "function": "brand_voice"}],
}


def ppo(**sections) -> PPOStage:
    return PPOStage.model_validate({**BASE, **sections})


def test_defaults_are_ppo_with_gae_one_response_per_prompt_and_kl_in_the_reward():
    cfg = ppo()
    assert (cfg.advantage.estimator, cfg.rollout.samples_per_prompt) == ("gae", 1)
    assert (cfg.kl.mode, cfg.kl.estimator) == ("reward", "k1")


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_group_baselines_need_two_or_more_samples_per_prompt(estimator):
    with pytest.raises(ValidationError, match="samples_per_prompt to 2 or more"):
        ppo(advantage={"estimator": estimator})
    assert ppo(advantage={"estimator": estimator}, rollout={"samples_per_prompt": 2}).rollout.samples_per_prompt == 2


def test_reinforce_pp_runs_with_one_sample_per_prompt_and_reads_gamma():
    cfg = ppo(advantage={"estimator": "reinforce_pp"}, update={"gamma": 0.9})
    assert cfg.update.gamma == 0.9


@pytest.mark.parametrize(
    ("estimator", "section", "key"),
    [
        ("grpo", {"value": {"mode": "head"}}, "value"),
        ("rloo", {"update": {"lam": 0.9}}, "update.lam"),
        ("grpo", {"update": {"gamma": 0.99}}, "update.gamma"),
        ("rloo", {"update": {"whiten_advantages": False}}, "update.whiten_advantages"),
        ("reinforce_pp", {"value": {"init": "stage:reward"}}, "value"),
        ("reinforce_pp", {"update": {"lam": 1.0}}, "update.lam"),
    ],
)
def test_settings_an_estimator_never_reads_are_errors(estimator, section, key):
    with pytest.raises(ValidationError, match=f"{key} is not used by advantage.estimator '{estimator}'"):
        ppo(advantage={"estimator": estimator}, rollout={"samples_per_prompt": 2}, **section)


def test_minibatches_hold_whole_prompt_groups():
    # 4 prompts x 3 responses in 2 minibatches: 2 whole prompts (6 rows) each, 3 rows per micro-batch.
    ppo(
        advantage={"estimator": "grpo"},
        rollout={"samples_per_prompt": 3},
        update={"num_minibatches": 2},
        training={"batch_size": 4, "gradient_accumulation_steps": 2},
    )
    # 4 prompts do not split into 3 minibatches of whole prompts, though the 12 responses would split into rows.
    with pytest.raises(ValidationError, match="whole prompts"):
        ppo(
            advantage={"estimator": "grpo"},
            rollout={"samples_per_prompt": 3},
            update={"num_minibatches": 3},
            training={"batch_size": 4},
        )


def test_unknown_estimator_and_kl_mode_are_rejected():
    with pytest.raises(ValidationError, match="estimator"):
        ppo(advantage={"estimator": "ppo"})
    with pytest.raises(ValidationError, match="mode"):
        ppo(kl={"mode": "both"})


def test_validate_exits_2_with_one_error_line(tmp_path, capsys):
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text(yaml.safe_dump({**BASE, "output_dir": str(tmp_path / "out"), "advantage": {"estimator": "grpo"}}))
    code = main(["validate", str(recipe)])
    err = capsys.readouterr().err
    assert code == 2
    assert "samples_per_prompt" in err and "Traceback" not in err
