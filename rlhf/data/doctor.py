"""The pre-flight data doctor: checks every stage's data before any model is loaded.

For each local data file a stage reads (the rows it will use: `max_train_rows` / `max_eval_rows` apply):
- errors (the run is refused), each naming file, row and field: unreadable file, malformed row, unrecognised format,
  missing or empty field, roles that do not alternate, chosen == rejected, rows mixing formats, no rows;
- warnings, with counts and the first examples: duplicate rows, conversations that open with an assistant turn,
  prompts that appear in both a training set and a held-out set (a stage's train/eval; in a pipeline every training
  set against every held-out set, compare prompts included), and rows that training would truncate or drop because
  of `data.max_length` (ppo: prompts longer than `data.max_prompt_length` are left-truncated);
- a small token-length histogram per file. Lengths are counted with the stage's tokenizer when its files are on disk
  (a local model directory, an embedded model already built, a hub model already in the local cache); otherwise
  they are estimated from whitespace words, and the report says so. A tokenizer without a pad token is a warning (EOS
  pads), one without pad and EOS tokens or without a chat template an error, as when the run loads it.

Neither torch nor transformers is imported (tokenizers are read by `rlhf.data.lengths`); a ppo recipe's
programmatic rewards are imported the way `rlhf.rewards.sources.load_reward_function` imports them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.config import EMBEDDED_PREFIX, STAGE_REF_PREFIX, PPOStage, StageBase, is_data_file
from rlhf.data.formats import DataError, classify, read_rows
from rlhf.data.lengths import WORDS_TO_TOKENS, load_doctor_tokenizer, measure_lengths, token_counter
from rlhf.stages.registry import PipelineRecipe, stage_of

MAX_LISTED = 10  # errors listed per file before "... and N more"
EXAMPLES = 3  # examples shown per warning


@dataclass
class Scan:
    """The rows of one data file as a stage will read them, with the problems found."""

    path: str
    shape: str  # "demonstrations", "preferences" or "prompts" (`rlhf.stages.registry.Stage.reads`)
    role: str  # "train", "eval" or "compare"
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    formats: dict[str, int] = field(default_factory=dict)  # format name -> rows in it (`rlhf.data.formats.classify`)

    @property
    def name(self) -> str:
        return Path(self.path).name

    def described(self) -> str:
        """'train.jsonl: 320 rows (format: messages)', naming every format found when rows differ."""
        if len(self.formats) <= 1:
            return f"{self.name}: {len(self.rows)} rows" + "".join(f" (format: {name})" for name in self.formats)
        found = "; ".join(f"{name}: {count} rows" for name, count in self.formats.items())
        return f"{self.name}: {len(self.rows)} rows (formats: {found})"


@dataclass
class StageReport:
    """What the doctor found for one stage."""

    stage: str
    summary: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The stage's part of the report: summary, errors, warnings, then the length histograms."""
        return (
            [self.summary]
            + [f"  error: {e}" for e in self.errors]
            + [f"  warning: {w}" for w in self.warnings]
            + [f"  {n}" for n in self.notes]
        )


@dataclass
class Report:
    """The doctor's findings for a whole recipe."""

    stages: list[StageReport] = field(default_factory=list)
    cross_warnings: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [f"{s.stage}: {e}" for s in self.stages for e in s.errors]

    @property
    def warnings(self) -> list[str]:
        return [f"{s.stage}: {w}" for s in self.stages for w in s.warnings] + self.cross_warnings

    def lines(self) -> list[str]:
        """The report as printed by `rlhf validate`."""
        lines = [line for stage in self.stages for line in stage.lines()]
        return lines + [f"warning: {w}" for w in self.cross_warnings]


class DataProblems(DataError):
    """Every error the doctor found, one per line (each names file, row and field)."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        self.source, self.row, self.field = None, None, None
        ValueError.__init__(self, "\n  ".join(errors))


def examine(recipe: StageBase | PipelineRecipe, *, tokenizers: bool = True) -> Report:
    """Checks the data of every stage a recipe runs.

    Args:
        recipe: A stage recipe or a pipeline recipe (its selected stages are checked).
        tokenizers: Count token lengths with each stage's tokenizer when it loads cheaply; False always estimates.
    """
    pipeline = recipe if isinstance(recipe, PipelineRecipe) else None
    stages = recipe.selected_stages() if pipeline is not None else [recipe]
    report = Report()
    train_sets: list[tuple[str, Scan]] = []
    held_out: list[tuple[str, Scan]] = []
    for stage in stages:
        if not isinstance(stage, StageBase):  # compare: its prompts are a held-out set
            prompts = _readable(getattr(getattr(stage, "prompts", None), "path", None), pipeline)
            if prompts and is_data_file(prompts) and not prompts.startswith(STAGE_REF_PREFIX):
                scan = scan_file(prompts, stage_of(stage).reads, "compare", getattr(stage.prompts, "max_prompts", None))
                held_out.append((stage.stage, scan))
                if scan.errors:
                    report.stages.append(
                        StageReport(stage.stage, f"{stage.stage}: prompts {scan.name}", errors=_listed(scan))
                    )
            continue
        stage_report, scans = _examine_stage(stage, pipeline, tokenizers)
        report.stages.append(stage_report)
        for scan in scans:
            (train_sets if scan.role == "train" else held_out).append((stage.stage, scan))
    if pipeline is not None:
        # Within a stage, train/eval overlap was reported with the stage; here every training set meets every
        # held-out set of the other stages.
        for train_stage, train in train_sets:
            for eval_stage, evaluation in held_out:
                if train_stage != eval_stage:
                    report.cross_warnings += _overlap(
                        train, evaluation, f"{train_stage} {train.role}", f"{eval_stage} {evaluation.role}"
                    )
    return report


def _readable(source: str | None, pipeline: PipelineRecipe | None) -> str | None:
    """A data source as the doctor reads it: `stage:NAME/FILE` is that file once stage NAME has written it, and
    stays the reference (named, not read) until then."""
    if source is None or pipeline is None or not source.startswith(STAGE_REF_PREFIX):
        return source
    path = pipeline.reference_path(source)
    return str(path) if path.is_file() else source


def _examine_stage(
    stage: StageBase, pipeline: PipelineRecipe | None, tokenizers: bool
) -> tuple[StageReport, list[Scan]]:
    data = stage.data
    train, evaluation = _readable(data.train, pipeline), _readable(data.eval, pipeline)
    scans = []
    for role, source, limit in (("train", train, data.max_train_rows), ("eval", evaluation, data.max_eval_rows)):
        if source is not None and is_data_file(source) and not source.startswith(STAGE_REF_PREFIX):
            scans.append(scan_file(source, stage_of(stage).reads, role, limit, data.margin_from_scores))
    files = ", ".join(s.described() for s in scans)
    hub = [
        f"{source} [{split}]"
        for source, split in ((train, data.split), (evaluation, data.eval_split))
        if source is not None and not is_data_file(source)
    ]
    if hub:  # named, not fetched: `rlhf validate` stays offline
        files += ("; " if files else "") + f"hub {', '.join(hub)} (checked when loaded)"
    pending = [s for s in (train, evaluation) if s is not None and s.startswith(STAGE_REF_PREFIX)]
    if pending:
        files += ("; " if files else "") + f"{', '.join(pending)} (written earlier in this run; checked when read)"
    report = StageReport(
        stage.stage, f"{stage.stage}: model {stage.model.name_or_path}; data {files}; output {stage.output_dir}"
    )
    for scan in scans:
        report.errors += _listed(scan)
        report.warnings += _duplicates(scan) + _assistant_first(scan)
    by_role = {s.role: s for s in scans}
    if "train" in by_role and "eval" in by_role:
        report.warnings += _overlap(by_role["train"], by_role["eval"], f"{stage.stage} train", f"{stage.stage} eval")
    usable = [s for s in scans if not s.errors and s.rows]
    if usable:
        tokenizer, how = load_doctor_tokenizer(stage, pipeline) if tokenizers else (None, "tokenizers not loaded")
        measure = token_counter(tokenizer)
        # The same rules as rlhf.models.loading.load_tokenizer, found before any model is loaded.
        if tokenizer is not None and tokenizer.pad_token is None and tokenizer.eos_token is None:
            report.errors.append(f"the {how} has neither a pad nor an EOS token; add a pad token")
        elif tokenizer is not None and tokenizer.pad_token is None:
            report.warnings.append(
                f"the {how} has no pad token: its EOS token {tokenizer.eos_token!r} will be used for padding"
            )
        if tokenizer is not None and tokenizer.chat_template is None:
            report.errors.append(f"the {how} has no chat template; conversational data needs one")
        for scan in usable:
            errors, warnings, notes = measure_lengths(stage, scan, measure, how if tokenizer is not None else None)
            report.errors += errors
            report.warnings += warnings
            report.notes += notes
        if tokenizer is None:
            report.notes.append(f"token lengths are estimates ({WORDS_TO_TOKENS} tokens per whitespace word): {how}")
    if isinstance(stage, PPOStage):
        report.errors += _reward_sources(stage)
    return report, scans


def scan_file(
    path: str, shape: str, role: str, limit: int | None = None, margin_from_scores: float | None = None
) -> Scan:
    """Reads and checks the rows a stage will use from one file, collecting every problem (not just the first).

    Args:
        path: The data file.
        shape: 'demonstrations', 'preferences' or 'prompts' (what the stage's declaration `reads`).
        role: 'train', 'eval' or 'compare'.
        limit: Read only the first N usable rows (`max_train_rows` etc.).
        margin_from_scores: The reward stage's `data.margin_from_scores`.
    """
    scan = Scan(path, shape, role)
    formats: dict[frozenset, int] = {}
    margins = 0
    try:
        for number, row in read_rows(path):
            try:
                record, label = classify(shape, row, path, number, margin_from_scores=margin_from_scores)
            except DataError as err:
                _record_error(scan, str(err))
                continue
            scan.formats[label] = scan.formats.get(label, 0) + 1
            formats.setdefault(frozenset(record) - {"margin"}, number)
            margins += "margin" in record
            scan.rows.append((number, record))
            if limit is not None and len(scan.rows) >= limit:
                break
    except DataError as err:  # the file itself, or a line that is not JSON: nothing after it can be read
        _record_error(scan, str(err))
    if not scan.rows and not scan.error_count:
        _record_error(scan, str(DataError(path, None, None, "no rows")))
    if len(formats) > 1:
        shapes = "; ".join(f"{', '.join(sorted(keys))} (first at row {row})" for keys, row in formats.items())
        _record_error(scan, str(DataError(path, None, None, f"rows mix formats ({shapes}): use one format per file")))
    if 0 < margins < len(scan.rows):
        _record_error(
            scan,
            str(
                DataError(
                    path,
                    None,
                    "margin",
                    f"{margins} of {len(scan.rows)} rows have a margin: give every row one, or none",
                )
            ),
        )
    return scan


def _record_error(scan: Scan, message: str) -> None:
    scan.error_count += 1
    if len(scan.errors) < MAX_LISTED:
        scan.errors.append(message)


def _listed(scan: Scan) -> list[str]:
    more = scan.error_count - len(scan.errors)
    return scan.errors + ([f"{scan.path}: ... and {more} more bad rows"] if more > 0 else [])


def _duplicates(scan: Scan) -> list[str]:
    seen: dict[str, int] = {}
    repeats = []
    for number, record in scan.rows:
        key = json.dumps(record, sort_keys=True)
        if key in seen:
            repeats.append((number, seen[key]))
        else:
            seen[key] = number
    if not repeats:
        return []
    examples = ", ".join(f"row {a} repeats row {b}" for a, b in repeats[:EXAMPLES])
    return [f"{scan.path}: {len(repeats)} duplicate rows ({examples}); they weigh double in training"]


def _assistant_first(scan: Scan) -> list[str]:
    rows = [n for n, r in scan.rows if _first_role(r) == "assistant"]
    if not rows:
        return []
    return [
        f"{scan.path}: {len(rows)} conversations open with an assistant turn (rows "
        f"{', '.join(map(str, rows[:EXAMPLES]))}{', ...' if len(rows) > EXAMPLES else ''})"
    ]


def _first_role(record: dict[str, Any]) -> str | None:
    for key in ("messages", "prompt", "chosen"):
        value = record.get(key)
        if isinstance(value, list) and value:
            roles = [m["role"] for m in value if m["role"] != "system"]
            return roles[0] if roles else None
    return None


def prompt_key(record: dict[str, Any]) -> str | None:
    """A row's prompt, whitespace- and case-normalised, for overlap checks (None when a row has no prompt)."""
    if "prompt" in record:
        prompt = record["prompt"]
    elif "messages" in record:
        prompt = record["messages"][:-1] if record["messages"][-1]["role"] == "assistant" else record["messages"]
    elif isinstance(record.get("chosen"), list):  # implicit prompt: the turns chosen and rejected share
        prompt = []
        for a, b in zip(record["chosen"], record["rejected"], strict=False):
            if a != b:
                break
            prompt.append(a)
    else:
        return None
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if not prompt:
        return None
    return "\n".join(f"{m['role']}: {' '.join(m['content'].split()).lower()}" for m in prompt)


def _overlap(train: Scan, held_out: Scan, train_label: str, held_label: str) -> list[str]:
    held: dict[str, int] = {}
    for number, record in held_out.rows:
        key = prompt_key(record)
        if key is not None:
            held.setdefault(key, number)
    shared = [(n, held[k], k) for n, k in ((n, prompt_key(r)) for n, r in train.rows) if k in held]
    if not shared:
        return []
    examples = "; ".join(
        f"{train.name} row {a} = {held_out.name} row {b}: {_snippet(k)!r}" for a, b, k in shared[:EXAMPLES]
    )
    return [
        f"{len(shared)} prompts of {train_label} ({train.name}) also appear in {held_label} ({held_out.name}), "
        f"so held-out numbers overstate generalisation; e.g. {examples}"
    ]


def _snippet(key: str, width: int = 60) -> str:
    text = key.split("\n")[-1].split(": ", 1)[-1]
    return text if len(text) <= width else text[: width - 3] + "..."


# ---- Reward sources (ppo): functions are imported, model directories read from config.json (no model loads).


def _reward_sources(stage: PPOStage) -> list[str]:
    errors = []
    for index, source in enumerate(stage.rewards):
        if source.function is not None:
            problem = reward_function_problem(source.function)
            if problem:
                errors.append(f"rewards.{index}.function: {problem}")
            continue
        if source.spec is not None:
            from rlhf.voice.spec import VoiceSpecError, load_voice

            try:
                load_voice(source.spec)
            except VoiceSpecError as err:
                errors.append(f"rewards.{index}.spec: {err}")
            continue
        if source.model is None or source.model.startswith((STAGE_REF_PREFIX, EMBEDDED_PREFIX)):
            continue
        from rlhf.rewards.implicit_marker import MARKER, is_implicit, read_marker

        if is_implicit(source.model):
            try:
                read_marker(source.model)
            except ValueError as err:
                errors.append(f"rewards.{index}.model: {err}")
            continue
        config = Path(source.model).expanduser() / "config.json"
        if not config.is_file():
            continue  # a hub id, or a missing directory (reported by the model-reference check)
        try:
            values = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            errors.append(f"rewards.{index}.model: {config} is not valid JSON")
            continue
        architectures = values.get("architectures") or []
        labels = len(values.get("id2label") or {}) or values.get("num_labels", 2)
        if not any(str(a).endswith("ForSequenceClassification") for a in architectures) or labels != 1:
            errors.append(
                f"rewards.{index}.model: {source.model} is not a reward model: expected a "
                f"*ForSequenceClassification architecture with one label, found "
                f"{architectures or 'no architecture'} with {labels} labels (a causal LM scores as an implicit "
                f"reward with {MARKER} beside it)"
            )
    return errors


def reward_function_problem(spec: str) -> str | None:
    """Why `rlhf.rewards.sources.load_reward_function(spec)` would fail, found with the same imports but without torch.

    A bare name means `reward_models.NAME:score`; anything else must be an explicit 'package.module:function'.
    """
    import importlib

    module_name, _, function_name = spec.partition(":")
    if not function_name:
        if "." in module_name:
            return f"reward function '{spec}': name the function explicitly, as 'package.module:function'"
        module_name, function_name = f"reward_models.{module_name}", "score"
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        return f"reward function '{spec}': cannot import {module_name} ({err})"
    if not callable(getattr(module, function_name, None)):
        return f"reward function '{spec}': {module_name} has no function '{function_name}'"
    return None
