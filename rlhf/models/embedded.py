"""The embedded default model: a small Llama-style causal LM and byte-level BPE tokenizer built locally.

`embedded:tiny` (and `embedded:small`) make the whole pipeline run with no hub access. The tokenizer is trained on the
project's own brand-voice corpus (the shipped data under recipes/brand_voice/data), the weights are a seeded random
initialisation, and both are written with `save_pretrained` into a cache directory keyed by a hash of everything that
goes in, so the same inputs give byte-identical tokenizer files and identical weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from rlhf.config import EMBEDDED_PREFIX

# Dimensions follow the reference benchmark's sizes, so benchmarks and the default pipeline share one model family.
EMBEDDED_SPECS: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    ),
    "small": dict(
        hidden_size=512, intermediate_size=1376, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8
    ),
}
VOCAB_SIZE = 2048
MAX_POSITIONS = 512
WEIGHTS_SEED = 0
# Bump when the build procedure changes, so stale caches are not reused.
BUILDER_VERSION = 1

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = [PAD, BOS, EOS, *ROLE_TOKENS]

# Assistant turns sit inside {% generation %} so TRL can train on assistant tokens only; the end-of-turn token (EOS)
# is inside the block, otherwise the model is never taught to stop.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{% else %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def corpus_dir() -> Path:
    """The shipped brand-voice data the tokenizer is trained on (in the source tree)."""
    return Path(__file__).resolve().parents[2] / "recipes" / "brand_voice" / "data"


def corpus_texts(directory: Path | None = None) -> list[str]:
    """Every text of the brand-voice corpus, in a fixed order (files sorted by name, rows in file order)."""
    directory = directory or corpus_dir()
    files = sorted(directory.glob("*.jsonl")) + sorted(directory.glob("*.md"))
    if not files:
        raise FileNotFoundError(
            f"the embedded model is built from the brand-voice corpus, but {directory} has no .jsonl/.md files; "
            "install the project from its source tree (pip install -e .)"
        )
    texts: list[str] = []
    for file in files:
        if file.suffix == ".md":
            texts.append(file.read_text(encoding="utf-8"))
            continue
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.extend(_strings(json.loads(line)))
    return texts


def _strings(value: object) -> list[str]:
    """All message contents and plain strings in a data row, depth first."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        if "content" in value:
            return _strings(value["content"])
        return [s for key in sorted(value) for s in _strings(value[key]) if key not in ("intent", "violation")]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def cache_root() -> Path:
    """Where built models are cached: $RLHF_CACHE, else ~/.cache/rlhf."""
    return Path(os.environ.get("RLHF_CACHE", Path.home() / ".cache" / "rlhf")) / "embedded"


def build_key(name: str, texts: list[str]) -> str:
    """A hash of everything that determines the built files."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            [
                BUILDER_VERSION,
                name,
                EMBEDDED_SPECS[name],
                VOCAB_SIZE,
                MAX_POSITIONS,
                WEIGHTS_SEED,
                SPECIAL_TOKENS,
                CHAT_TEMPLATE,
            ]
        ).encode()
    )
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def resolve_embedded(reference: str, cache: Path | None = None) -> Path:
    """Returns the directory of an `embedded:NAME` model, building it first if it is not cached.

    Several processes may ask at once (distributed launches): each builds into a private temporary directory and
    renames it into place; the first rename wins and the others use the result.
    """
    name = reference.removeprefix(EMBEDDED_PREFIX)
    if name not in EMBEDDED_SPECS:
        raise ValueError(
            f"unknown embedded model '{reference}'; available: "
            + ", ".join(EMBEDDED_PREFIX + n for n in EMBEDDED_SPECS)
        )
    texts = corpus_texts()
    target = (cache or cache_root()) / f"{name}-{build_key(name, texts)}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build_embedded(name, texts, staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_tokenizer(texts: list[str]):
    """Trains the byte-level BPE tokenizer with pad/bos/eos, role tokens and the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_POSITIONS,
    )


def build_embedded(name: str, texts: list[str], out: Path) -> None:
    """Builds tokenizer and randomly initialised weights for `embedded:NAME` into `out`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(texts)
    dims = EMBEDDED_SPECS[name]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        head_dim=dims["hidden_size"] // dims["num_attention_heads"],
        tie_word_embeddings=False,
        **dims,
    )
    # A private generator keeps the caller's global RNG untouched and makes the weights independent of call order.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHTS_SEED)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
