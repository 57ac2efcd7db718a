"""`rlhf validate`: checks recipe and data without loading a model, exits 2 with a clear message on any problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlhf.cli import main

from .conftest import DATA_DIR, PIPELINE, REPO_ROOT


def validate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["validate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_the_shipped_pipeline(capsys):
    code, out, err = validate(capsys, PIPELINE)
    assert code == 0, err
    assert f"ok: {PIPELINE}" in out
    rows = sum(1 for line in (DATA_DIR / "sft_train.jsonl").read_text().splitlines() if line.strip())
    assert f"sft_train.jsonl: {rows} rows" in out
    for stage in ("sft", "reward"):
        assert any(line.startswith(f"{stage}: model ") for line in out.splitlines())


def test_validate_selected_stages_only(capsys):
    code, out, _ = validate(capsys, PIPELINE, "stages=[sft]")
    assert code == 0
    assert not any(line.startswith("reward:") for line in out.splitlines())


def test_missing_data_file_exits_2_naming_the_file(capsys):
    code, out, err = validate(capsys, PIPELINE, "reward.data.eval=data/no_such_prefs.jsonl")
    assert code == 2
    assert str(DATA_DIR / "no_such_prefs.jsonl") in err
    assert "file not found" in err
    assert "ok:" not in out


def test_bad_data_row_exits_2_naming_file_row_and_field(tmp_path, capsys):
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
    ]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        yaml.safe_dump({"stage": "sft", "output_dir": str(tmp_path / "out"), "data": {"train": "train.jsonl"}})
    )
    code, _, err = validate(capsys, recipe)
    assert code == 2
    assert f"{train}, row 2, field 'messages[1].content'" in err


def test_recipe_error_exits_2_with_the_suggestion(capsys):
    code, _, err = validate(capsys, PIPELINE, "sft.training.learning_rat=1e-4")
    assert code == 2
    assert "did you mean 'sft.training.learning_rate'" in err


def test_malformed_override_exits_2(capsys):
    code, _, err = validate(capsys, PIPELINE, "foo")
    assert code == 2
    assert "override 'foo'" in err


def test_missing_local_model_directory_exits_2(tmp_path, capsys):
    missing = tmp_path / "no" / "model"
    code, _, err = validate(capsys, PIPELINE, f"sft.model.name_or_path={missing}")
    assert code == 2
    assert f"model directory not found: {missing}" in err


def test_hub_model_ids_are_not_checked_locally(capsys):
    code, _, err = validate(capsys, PIPELINE, "sft.model.name_or_path=Qwen/Qwen2.5-0.5B-Instruct", "stages=[sft]")
    assert code == 0, err


def test_missing_recipe_file_exits_2(tmp_path, capsys):
    code, _, err = validate(capsys, tmp_path / "nope.yaml")
    assert code == 2
    assert "recipe file not found" in err


def test_a_command_is_required():
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def assert_validate_imports_nothing_heavy(*overrides: str) -> None:
    """`rlhf validate` of the shipped pipeline (with `overrides`) passes in a fresh process without importing torch,
    transformers, trl, datasets or deepspeed."""
    code = (
        "import sys\n"
        "from rlhf.cli import main\n"
        f"assert main(['validate', {str(PIPELINE)!r}, *{list(overrides)!r}]) == 0\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'datasets', 'deepspeed') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_validate_does_not_import_torch():
    assert_validate_imports_nothing_heavy()


def test_validate_reads_an_implicit_reward_model_without_importing_torch(tmp_path):
    """A reward source that is a directory is checked (its marker read) by `rlhf validate`, still without torch."""
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (tmp_path / "implicit_reward.json").write_text('{"beta": 0.5, "reference": null}')
    assert_validate_imports_nothing_heavy(f"ppo.rewards.0.model={tmp_path}")


def test_python_dash_m_rlhf_validate():
    done = subprocess.run(
        [sys.executable, "-m", "rlhf", "validate", str(PIPELINE), "foo.bar=1"],
        cwd=Path("/"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown key 'foo'" in done.stderr
