"""The model directories a benchmark runs: the same files for our ppo and for the TRL reference.

`<root>/<size>/` is a copy of `embedded:<size>` (weights, tokenizer, chat template): the reference script's
`--models <root>` reads policy, reference, value and reward from it (the last two as sequence classifiers whose score
head it initialises at random). Our recipe needs its reward model as a directory of its own, so
`<root>/<size>-reward/` holds the same trunk as a one-label sequence classifier with a seeded random score head; our
critic starts from it as well.

`arch="qwen2"` builds the same workload as a Qwen2 model under `<root>-qwen2/`: the same dimensions, tokenizer and
weights (Qwen2's q/k/v biases are added at zero, so it computes the same function and samples the same tokens), to
compare the decoding path of another family against the same baseline.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

SOURCE_STAMP = "bench_source.txt"  # names the embedded build a copy was made from, so a rebuilt model is re-copied
SCORE_SEED = 0
ARCHES = ("llama", "qwen2")


def default_root(arch: str = "llama") -> Path:
    """`$RLHF_CACHE/bench/models` (next to the embedded models' cache); `models-<arch>` for another architecture."""
    from rlhf.models.embedded import cache_root

    return cache_root().parent / "bench" / ("models" if arch == "llama" else f"models-{arch}")


def prepare(size: str, root: Path | None = None, arch: str = "llama") -> dict[str, Path]:
    """Builds (once) and returns {"policy": <root>/<size>, "reward": <root>/<size>-reward, "root": <root>}."""
    from rlhf.models.embedded import resolve_embedded

    if arch not in ARCHES:
        raise ValueError(f"unknown bench architecture {arch!r}; available: {', '.join(ARCHES)}")
    root = Path(root or default_root(arch))
    source = resolve_embedded(f"embedded:{size}")
    stamp = source.name if arch == "llama" else f"{arch}:{source.name}"
    policy, reward = root / size, root / f"{size}-reward"
    if not _fresh(policy, stamp):
        if arch == "llama":
            _publish(policy, lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True), stamp)
        else:
            _publish(policy, lambda tmp: _build_qwen2(source, tmp), stamp)
    if not _fresh(reward, stamp):
        _publish(reward, lambda tmp: _build_reward(source if arch == "llama" else policy, tmp), stamp)
    return {"policy": policy, "reward": reward, "root": root}


def _fresh(directory: Path, stamp: str) -> bool:
    path = directory / SOURCE_STAMP
    return path.is_file() and path.read_text().strip() == stamp


def _publish(target: Path, build, stamp: str) -> None:
    """Builds into a private directory and swaps it into place, so a half-built directory is never read."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        (staging / SOURCE_STAMP).write_text(stamp + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build_reward(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SCORE_SEED)
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)


def _build_qwen2(source: Path, out: Path) -> None:
    """The embedded Llama model as a `Qwen2ForCausalLM`: same dimensions and weights, q/k/v biases at zero."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    llama = LlamaForCausalLM.from_pretrained(source)
    c = llama.config
    config = Qwen2Config(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps,
        rope_parameters=c.rope_parameters,
        tie_word_embeddings=False,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        pad_token_id=c.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    missing, unexpected = model.load_state_dict(llama.state_dict(), strict=False)
    if unexpected or not all(name.endswith("_proj.bias") for name in missing):
        raise RuntimeError(f"Llama -> Qwen2: unexpected {unexpected}, missing {missing}")
    with torch.no_grad():
        for name in missing:
            model.get_parameter(name).zero_()
    model.generation_config = llama.generation_config
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
