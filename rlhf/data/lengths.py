"""Token lengths for the data doctor: the stage's own tokenizer when its files are on disk, else an estimate.

The tokenizer is read without `transformers` (so without torch, keeping `rlhf validate` fast): `tokenizer.json` goes
to the `tokenizers` library and the chat template is rendered with a sandboxed jinja2 environment that behaves like
`apply_chat_template` (the `{% generation %}` block, `raise_exception`, a `tojson` that does not escape HTML, the
special tokens as variables). Files come from a local model directory, an embedded model already built, or a hub model
already in the local Hugging Face cache; nothing is built or downloaded. Without them lengths are estimated from
whitespace words, and the report says so.

`measure_lengths` finds the rows a stage's training would truncate or drop because of `data.max_length` (ppo: prompts
longer than `data.max_prompt_length`, which are left-truncated) and draws a small text histogram.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf.config import EMBEDDED_PREFIX, STAGE_REF_PREFIX, StageBase
from rlhf.stages.registry import PipelineRecipe

EXAMPLES = 3  # row numbers shown per warning
WORDS_TO_TOKENS = 1.3  # the estimate used without a tokenizer: tokens per whitespace-separated word
MESSAGE_OVERHEAD = 3  # estimated template tokens per message (role marker, end-of-turn)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token")


class LightTokenizer:
    """A tokenizer's `tokenizer.json` and chat template, loaded without transformers: enough to count tokens.

    Args:
        files: Paths of the files in TOKENIZER_FILES that exist (tokenizer.json is required).
        chat_template: A template that replaces the tokenizer's own (`model.chat_template`).
    """

    def __init__(self, files: dict[str, Path], chat_template: str | None = None):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(files["tokenizer.json"]))
        config = _read_json(files.get("tokenizer_config.json"))
        special_map = _read_json(files.get("special_tokens_map.json"))
        self.special = {name: _token_text(config.get(name, special_map.get(name))) for name in SPECIAL}
        template = config.get("chat_template")
        if "chat_template.jinja" in files:
            template = files["chat_template.jinja"].read_text(encoding="utf-8")
        if isinstance(template, list):  # named templates: use the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        template = chat_template or template
        self.chat_template = template
        self._template = _compile(template) if template else None

    @property
    def pad_token(self) -> str | None:
        return self.special["pad_token"]

    @property
    def eos_token(self) -> str | None:
        return self.special["eos_token"]

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        """The chat template applied to messages, as `apply_chat_template(..., tokenize=False)` returns it."""
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            **{k: v for k, v in self.special.items() if v is not None},
        )

    def count(self, text: str) -> int:
        """Tokens in a text, without added special tokens (the template already holds them)."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    value = json.loads(path.read_text(encoding="utf-8"))
    return value if isinstance(value, dict) else {}


def _token_text(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def _compile(template: str):
    """A jinja2 template compiled the way transformers compiles chat templates (sandboxed)."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        # `{% generation %}...{% endgeneration %}` marks assistant tokens for TRL; for counting it renders its body.
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def load_doctor_tokenizer(stage: StageBase, pipeline: PipelineRecipe | None) -> tuple[LightTokenizer | None, str]:
    """The stage's tokenizer if its files are already on disk; else (None, why not).

    `stage:NAME` references are followed to the model the referenced stage starts from (it saves that tokenizer).
    """
    ref = stage.model.name_or_path
    template = stage.model.chat_template  # `model.chat_template` replaces the tokenizer's, as in load_tokenizer
    seen = set()
    while ref.startswith(STAGE_REF_PREFIX) and pipeline is not None and ref not in seen:
        seen.add(ref)
        target = pipeline.sections().get(ref.removeprefix(STAGE_REF_PREFIX))
        if target is None:
            break
        ref = target.model.name_or_path
        template = template or target.model.chat_template  # an earlier stage saves its template with its tokenizer
    if ref.startswith(STAGE_REF_PREFIX):
        return None, f"{ref} is not built yet"
    if ref.startswith(EMBEDDED_PREFIX):
        directory = _embedded_dir(ref)
        if directory is None:
            return None, f"{ref} is not built yet (it is built on the first run)"
        files = _local_files(directory)
    elif Path(ref).expanduser().is_dir():
        files = _local_files(Path(ref).expanduser())
    else:
        files = _cached_hub_files(ref, stage.model.revision)
    if "tokenizer.json" not in files:
        return None, f"no tokenizer.json of {ref} on disk (not downloaded, or a slow-only tokenizer)"
    try:
        return LightTokenizer(files, template), f"tokenizer of {ref}"
    except Exception as err:  # an unreadable file only means "estimate instead"; the run reports load errors
        return None, f"the tokenizer files of {ref} could not be read ({type(err).__name__}: {err})"


def _local_files(directory: Path) -> dict[str, Path]:
    return {name: directory / name for name in TOKENIZER_FILES if (directory / name).is_file()}


def _cached_hub_files(repo_id: str, revision: str | None) -> dict[str, Path]:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return {}
    files = {}
    for name in TOKENIZER_FILES:
        try:
            found = try_to_load_from_cache(repo_id, name, revision=revision)
        except Exception:  # not a valid repo id: nothing cached under it
            return {}
        if isinstance(found, str):
            files[name] = Path(found)
    return files


def _embedded_dir(ref: str) -> Path | None:
    from rlhf.models.embedded import build_key, cache_root, embedded_texts

    try:
        name, texts = embedded_texts(ref)
        target = cache_root() / f"{name}-{build_key(name, texts)}"
    except (ValueError, FileNotFoundError):  # an unknown name or a missing corpus: the run reports it
        return None
    return target if (target / "tokenizer.json").is_file() else None


class TemplateRefused(ValueError):
    """The chat template raised on a conversation (training would fail on the same row)."""


def token_counter(tokenizer: LightTokenizer | None) -> Callable[[list[dict[str, str]] | str, bool], int]:
    """A function (messages or text, add_generation_prompt) -> token count, exact or estimated."""

    def estimate(value: list[dict[str, str]] | str, generation_prompt: bool = False) -> int:
        if isinstance(value, str):
            return round(len(value.split()) * WORDS_TO_TOKENS)
        return sum(round(len(m["content"].split()) * WORDS_TO_TOKENS) + MESSAGE_OVERHEAD for m in value)

    if tokenizer is None:
        return estimate

    def count(value: list[dict[str, str]] | str, generation_prompt: bool = False) -> int:
        if isinstance(value, list):
            if tokenizer.chat_template is None:
                return estimate(value)
            import jinja2

            try:
                value = tokenizer.render(value, generation_prompt)
            except jinja2.TemplateError as err:
                raise TemplateRefused(str(err)) from None
        return tokenizer.count(value)

    return count


def measure_lengths(stage: StageBase, scan, count, how: str | None) -> tuple[list[str], list[str], list[str]]:
    """Errors (rows the chat template refuses), warnings about rows of a scanned file that training would truncate or
    drop, and the length histogram.

    Args:
        stage: The stage recipe (its data limits, and `packing` for sft).
        scan: A `rlhf.data.doctor.Scan` (path, shape, rows).
        count: A `token_counter`.
        how: Which tokenizer counted (None: the counts are estimates).
    """
    data = stage.data
    lengths, over, dropped, errors = [], [], [], []
    for number, record in scan.rows:
        try:
            if scan.shape == "demonstrations":
                full, prompt = _sft_lengths(record, count)
                lengths.append(full)
                if prompt >= data.max_length:
                    dropped.append(number)
                elif full > data.max_length:
                    over.append(number)
            elif scan.shape == "preferences":
                longest = max(_pair_length(record, side, count) for side in ("chosen", "rejected"))
                lengths.append(longest)
                if longest > data.max_length:
                    dropped.append(number)
            else:
                length = count(record["prompt"], True)
                lengths.append(length)
                if length > data.max_prompt_length:
                    over.append(number)
        except TemplateRefused as err:
            if len(errors) < EXAMPLES:
                errors.append(f"{scan.path}, row {number}: the chat template ({how}) refuses this conversation: {err}")
    limit = data.max_prompt_length if scan.shape == "prompts" else data.max_length
    limit_name = "data.max_prompt_length" if scan.shape == "prompts" else "data.max_length"
    about = "" if how is not None else "about "
    warnings = []
    packing = getattr(stage, "packing", False)
    if over and not packing:
        action = "left-truncated" if scan.shape == "prompts" else "truncated (the end of the response is cut)"
        warnings.append(
            f"{scan.path}: {about}{len(over)} of {len(scan.rows)} rows are longer than {limit_name}="
            f"{limit} tokens and will be {action} (rows {_rows(over)})"
        )
    if dropped and not packing:
        why = "the prompt alone fills " if scan.shape == "demonstrations" else "chosen or rejected is longer than "
        warnings.append(
            f"{scan.path}: {about}{len(dropped)} of {len(scan.rows)} rows will be dropped: {why}"
            f"{limit_name}={limit} tokens (rows {_rows(dropped)})"
        )
    title = f"{scan.name} token lengths ({how or 'estimated'}), {limit_name}={limit}:"
    return errors, warnings, [title, *histogram(lengths, limit)]


def _sft_lengths(record: dict[str, Any], count) -> tuple[int, int]:
    if "messages" in record:
        messages = record["messages"]
        return count(messages, False), count(messages[:-1], True) if len(messages) > 1 else 0
    prompt, completion = record["prompt"], record["completion"]
    if isinstance(prompt, list):
        return count(prompt + completion, False), count(prompt, True)
    return count(prompt + completion, False) + 1, count(prompt, False)  # + EOS


def _pair_length(record: dict[str, Any], side: str, count) -> int:
    prompt, response = record.get("prompt"), record[side]
    if isinstance(response, list) or isinstance(prompt, list):
        messages = list(prompt or [])
        messages += response if isinstance(response, list) else [{"role": "assistant", "content": response}]
        return count(messages, False)
    return count((prompt or "") + response, False) + 1  # + EOS


def _rows(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:EXAMPLES])) + (", ..." if len(numbers) > EXAMPLES else "")


def histogram(lengths: list[int], limit: int, bins: int = 4, width: int = 30) -> list[str]:
    """A text histogram of lengths: `bins` equal bins up to `limit`, and one for everything longer."""
    if not lengths:
        return []
    step = max(1, -(-limit // bins))
    edges = [(i * step, min((i + 1) * step, limit)) for i in range(bins)]
    counts = [sum(lo < n <= hi or (i == 0 and n == 0) for n in lengths) for i, (lo, hi) in enumerate(edges)]
    counts.append(sum(n > limit for n in lengths))
    labels = [f"{lo + 1:>6}-{hi:<6}" for lo, hi in edges] + [f"{'> ' + str(limit):<13}"]
    top = max(counts) or 1
    lines = [f"  {label}|{'#' * round(width * c / top):<{width}} {c}" for label, c in zip(labels, counts, strict=True)]
    lines.append(f"  min {min(lengths)}, median {sorted(lengths)[len(lengths) // 2]}, max {max(lengths)}")
    return lines
