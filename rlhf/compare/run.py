"""The compare stage: every model answers the same held-out prompts, is scored, measured and reported.

Shape: load prompts (with each row's other columns, the `info` that reward functions may take) and scorers -> for
each model: sample (the ppo stage's batched rollout code, one seed for every model), score with the proxy and each
judge (batched; per rule where a judge's module has `explain`), KL to the reference, length, EOS, diversity ->
statistics (`rlhf.compare.stats`) -> alarms (`rlhf.compare.alarms`) -> report (`rlhf.compare.report`, with the judge
sections of `rlhf.compare.breakdown` and the provenance of `rlhf.compare.provenance`). Models are loaded one
at a time next to the reference, so memory holds at most two policies plus the scorers.

Runs on one process: under a multi-process launch rank 0 does the work alone and the other ranks return at once
(see `run`).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.artifacts import METRICS, check_parent, data_hashes, write_atomic, write_manifest, write_recipe
from rlhf.compare.diversity import corpus_distinct_n, text_measures, words
from rlhf.config import CompareStage, ModelConfig, PromptsConfig

logger = logging.getLogger("rlhf")

RESULTS = "results.json"
RESPONSES = "responses.jsonl"


def run(cfg: CompareStage) -> Path:
    """Generates, scores and reports; returns the output directory.

    Leaves `report.md`, `report.html` (self-contained), `plots/*.png`, `results.json` (every number),
    `responses.jsonl` (every response with its scores), `recipe.yaml`, `metrics.jsonl` and `manifest.json` in
    `cfg.output_dir`.
    """
    from rlhf.distributed import is_main_process, single_process_loading

    output_dir = Path(cfg.output_dir)
    # Rank 0 compares alone, as one process that makes no collective call: its models are loaded whole, outside
    # ZeRO-3's partitioning (which would broadcast to ranks that are not there), and sampled without synced_gpus.
    # The other ranks return at once rather than wait in a barrier, which a long comparison would time out (the
    # process group's 30-minute default); nothing after compare needs them.
    if not is_main_process():
        return output_dir
    with single_process_loading():
        return _compare(cfg, output_dir)


def _compare(cfg: CompareStage, output_dir: Path) -> Path:
    started = time.time()
    output_dir.mkdir(parents=True, exist_ok=True)
    write_recipe(cfg, output_dir)

    prompts, infos = load_prompts(cfg.prompts)
    generated = generate_and_score(cfg, prompts, infos)
    if cfg.pairwise_judges:
        from rlhf.compare.pairwise import run_judges
        from rlhf.rewards.sources import last_user_message

        texts = [last_user_message(p) for p in prompts]
        generated["pairwise"] = run_judges(cfg, texts, generated["records"], (len(prompts), cfg.samples_per_prompt))
    results, scores, samples = summarise(cfg, prompts, generated)
    results["frontier"] = frontier_results(cfg, results)

    from rlhf.compare.report import write_report

    write_atomic(output_dir / RESULTS, json.dumps(results, indent=2) + "\n")
    with (output_dir / RESPONSES).open("w", encoding="utf-8") as handle:
        for record in generated["records"]:
            handle.write(json.dumps(record) + "\n")
    if cfg.human_export is not None:
        from rlhf.compare.human import export_sheet
        from rlhf.rewards.sources import last_user_message

        counts = export_sheet(
            output_dir / "human",
            generated["records"],
            [last_user_message(p) for p in prompts],
            reference=cfg.reference_name(),
            arms=cfg.arm_names(),
            samples_per_prompt=cfg.samples_per_prompt,
            cfg=cfg.human_export,
            seed=cfg.seed,
        )
        results["human_export"] = {"dir": str(output_dir / "human"), **counts}
        write_atomic(output_dir / RESULTS, json.dumps(results, indent=2) + "\n")
        logger.info(
            "compare: human-evaluation sheet (%d items, %d repeated, %d identical pairs as ties) in %s",
            counts["items"],
            counts["repeats"],
            counts["identical"],
            output_dir / "human",
        )
    report = write_report(output_dir, results, scores, samples, training_curves(results["models"]))
    _track(cfg, output_dir, results, samples)
    write_manifest(
        output_dir,
        cfg,
        data=data_hashes(cfg.prompts.path),
        parents=generated["parents"],
        results={
            "report": report.name,
            "alarms": [":".join(filter(None, (a["kind"], a["model"], a["judge"]))) for a in results["alarms"]],
            **{
                f"{model}/{name}": est["mean"]
                for model, measures in results["summary"].items()
                for name, est in measures.items()
            },
        },
        started=started,
    )
    for alarm in results["alarms"]:
        logger.warning("compare alarm (%s, %s): %s", alarm["kind"], alarm["model"], alarm["message"])
    logger.info("compare finished in %.0f s; report: %s", time.time() - started, report)
    return output_dir


def load_prompts(cfg: PromptsConfig) -> tuple[list[list[dict[str, str]]], list[dict[str, Any]]]:
    """The held-out prompts as message lists ending in a user turn (file or hub dataset), and each row's other
    columns (its `info`: e.g. the ground-truth intent), in the same order."""
    from rlhf.config import is_data_file
    from rlhf.data.formats import load_records, normalize_prompt
    from rlhf.rewards.sources import load_prompt_info

    infos = load_prompt_info(cfg.path, cfg.split, cfg.max_prompts)
    if is_data_file(cfg.path):
        return [row["prompt"] for row in load_records(cfg.path, "prompts", max_rows=cfg.max_prompts)], infos
    from datasets import load_dataset

    rows = load_dataset(cfg.path, split=cfg.split)
    if cfg.max_prompts is not None:
        rows = rows.select(range(min(cfg.max_prompts, len(rows))))
    prompts = [normalize_prompt(dict(row), f"{cfg.path}[{cfg.split}]", i + 1)["prompt"] for i, row in enumerate(rows)]
    return prompts, infos


def generate_and_score(
    cfg: CompareStage, prompts: list[list[dict[str, str]]], infos: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Samples `samples_per_prompt` responses per prompt from every model and measures each response.

    Args:
        infos: Each prompt row's other columns, passed to reward functions that take `info` (None: none).

    Returns:
        {"best_of_n": {arm: {"model", "n", "candidates", "kl_bound"}} (absent or empty without best-of-n arms),
        "measures": {model: {measure: [P, K] array}}, "rules": {judge: {model: {rule: [P, K] array, NaN where the
        rule does not apply}}} for judges whose module has `explain`, "records": one dict per response,
        "parents": lineage of every model and learned scorer, "paths": {model: resolved path}, "shares": what each
        scorer shares with the training signal, "notes": things the reader should know}.
    """
    import torch

    from rlhf.compare.provenance import shared_with_training
    from rlhf.evaluation import generate, score_generations, sequence_kl
    from rlhf.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
    from rlhf.rewards.implicit import ImplicitReward
    from rlhf.rewards.sources import build_reward_terms, last_user_message, same_tokenizer

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    reference = cfg.reference_name()
    paths = {m.name: resolve_model_path(m.path) for m in cfg.models}
    for name, path in paths.items():
        if path.startswith("/") and not Path(path).exists():
            raise FileNotFoundError(f"compare: model '{name}' not found at {path} (has the stage that makes it run?)")
    parents = {f"model/{name}": check_parent(path) for name, path in paths.items()}
    for source in [*cfg.proxy, *cfg.judges, *cfg.pairwise_judges]:
        if source.model is not None:
            parents[f"scorer/{source.name}"] = check_parent(source.model)

    def load(name: str):
        model_cfg = ModelConfig(name_or_path=paths[name], dtype=cfg.dtype)
        tokenizer = load_tokenizer(model_cfg, paths[name], padding_side="left")
        return load_causal_lm(model_cfg, paths[name]).to(device).eval(), tokenizer

    ref_model, ref_tokenizer = load(reference)
    # Scorers are loaded once; whether a learned scorer can read a model's sampled ids directly is decided per model
    # below, against the tokenizer the scorers were loaded next to. An implicit scorer whose reference is the
    # reference model (the sft model, the usual case) reads it from ref_model: one copy of those weights, not two.
    shared = (paths[reference], ref_model)
    proxy_terms = build_reward_terms(cfg.proxy, ref_tokenizer, cfg.dtype, False, shared) if cfg.proxy else []
    judge_terms = build_reward_terms(cfg.judges, ref_tokenizer, cfg.dtype, False, shared)
    for term in [*proxy_terms, *judge_terms]:
        if term.model is not None:
            term.model.to(device)
        if isinstance(term.model, ImplicitReward) and term.model.shares_reference:
            logger.info(
                "compare: '%s' takes its reference from the reference model '%s' (one copy)", term.name, reference
            )

    k = cfg.samples_per_prompt
    expanded = [p for p in prompts for _ in range(k)]  # prompt-major: rows i*k .. i*k+k-1 answer prompt i
    infos = infos if infos is not None else [{} for _ in prompts]
    expanded_info = [i for i in infos for _ in range(k)]
    expanded_text = [last_user_message(p) for p in expanded]
    explainers = _explainers(judge_terms)
    rules: dict[str, dict[str, dict[str, np.ndarray]]] = {judge: {} for judge in explainers}
    settings = dict(
        max_prompt_length=cfg.prompts.max_prompt_length,
        max_new_tokens=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature,
        top_k=cfg.rollout.top_k,
        top_p=cfg.rollout.top_p,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        device=device,
        decoder=cfg.rollout.decoder,
    )
    measures: dict[str, dict[str, np.ndarray]] = {}
    records: list[dict[str, Any]] = []
    notes: list[str] = []

    def measure(name: str, generations, tokenizer, same_tokens: bool, kl: torch.Tensor | None, extra=None) -> None:
        """Scores and measures one arm's replies (prompt-major, k per prompt) into `measures` and `records`."""
        values: dict[str, torch.Tensor] = {}
        if proxy_terms:
            terms = _for_tokenizer(proxy_terms, same_tokens)
            proxy = score_generations(terms, generations, expanded, tokenizer, expanded_info)
            values["proxy"] = proxy["total"]
            if len(terms) > 1:  # with one term the proxy is that term
                values.update({term.name: proxy[term.name] for term in terms})
        judged = score_generations(
            _for_tokenizer(judge_terms, same_tokens), generations, expanded, tokenizer, expanded_info
        )
        values.update({term.name: judged[term.name] for term in judge_terms})
        per_rule: dict[str, dict[str, list[float | None]]] = {}
        for judge, (explain, wants_info) in explainers.items():
            rows = (
                explain(expanded_text, generations.texts, info=expanded_info)
                if wants_info
                else explain(expanded_text, generations.texts)
            )
            per_rule[judge] = {rule: [row.get(rule) for row in rows] for rule in rows[0]} if rows else {}
            rules[judge][name] = {
                rule: np.array([np.nan if v is None else float(v) for v in column]).reshape(len(prompts), k)
                for rule, column in per_rule[judge].items()
            }
        if kl is not None:
            values["kl"] = kl
        values["length"] = torch.cat([b.response_mask.sum(1).float().cpu() for b in generations.batches])
        values["eos"] = torch.cat([b.has_eos.float().cpu() for b in generations.batches])
        text = [text_measures(t) for t in generations.texts]
        for key in text[0]:
            values[key] = torch.tensor([m[key] for m in text], dtype=torch.float64)
        values.update(extra or {})
        measures[name] = {key: v.double().numpy().reshape(len(prompts), k) for key, v in values.items()}
        for row, response in enumerate(generations.texts):
            records.append(
                {
                    "model": name,
                    "prompt_index": row // k,
                    "sample": row % k,
                    "response": response,
                    **{key: float(v[row]) for key, v in values.items()},
                    **{
                        f"{judge}/{rule}": column[row]
                        for judge, by_rule in per_rule.items()
                        for rule, column in by_rule.items()
                    },
                }
            )

    def kl_to_reference(model, generations, name: str, is_reference: bool, same_tokens: bool) -> torch.Tensor | None:
        if is_reference:
            return torch.zeros(len(expanded))  # the log-ratio of a model to itself is exactly 0
        if not same_tokens:
            notes.append(f"{name}: no KL to {reference} (different tokenizers: token log-ratios are undefined)")
            return None
        return torch.cat(
            [
                sequence_kl(model, ref_model, batch, cfg.rollout.temperature).float().cpu()
                for batch in generations.batches
            ]
        )

    best_of_n: dict[str, dict[str, Any]] = {}
    for spec in cfg.models:
        name = spec.name
        started = time.time()
        model, tokenizer = (ref_model, ref_tokenizer) if name == reference else load(name)
        same_tokens = same_tokenizer(tokenizer, ref_tokenizer)
        generations = generate(model, tokenizer, expanded, **settings)
        kl = kl_to_reference(model, generations, name, name == reference, same_tokens)
        measure(name, generations, tokenizer, same_tokens, kl)
        logger.info("compare: %s answered %d prompts x %d in %.0f s", name, len(prompts), k, time.time() - started)
        if name == cfg.best_of_n_model():
            started = time.time()
            arms = _best_of_n_arms(
                cfg, model, tokenizer, prompts, infos, settings, _for_tokenizer(proxy_terms, same_tokens)
            )
            for arm, found in arms.items():
                replies = found.pop("replies")
                to_model = torch.from_numpy(found.pop("kl_per_reply")).float()
                # log(bon / ref) = log(bon / model) + log(model / ref): best-of-n's KL to the model that sampled its
                # candidates, plus that model's own log-ratio to the reference on the chosen replies.
                kl = kl_to_reference(model, replies, arm, name == reference, same_tokens)
                measure(
                    arm, replies, tokenizer, same_tokens, None if kl is None else kl + to_model, {"bon_kl": to_model}
                )
                best_of_n[arm] = found
            logger.info(
                "compare: best-of-%s from %s in %.0f s",
                "/".join(str(a["n"]) for a in arms.values()),
                name,
                time.time() - started,
            )
        if name != reference:
            del model
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {
        "best_of_n": best_of_n,
        "measures": measures,
        "rules": rules,
        "records": records,
        "parents": parents,
        "paths": paths,
        "shares": shared_with_training(cfg, proxy_terms, judge_terms),
        "notes": notes,
    }


def _best_of_n_arms(
    cfg: CompareStage, model, tokenizer, prompts: list, infos: list[dict], settings: dict, proxy_terms: list
) -> dict[str, dict[str, Any]]:
    """Samples max(n) candidates per prompt and sample from `model`, lets the proxy pick the best of the first n.

    Returns:
        {arm: {"model", "n", "candidates", "kl_bound", "replies": the chosen replies (prompt-major, like every
        arm's), "kl_per_reply": [P * K] measured KL of best-of-n to `model` (`rlhf.compare.best_of_n`)}}.
    """
    from rlhf.compare.best_of_n import choose, kl_bound, measured_kl
    from rlhf.evaluation import generate, score_generations

    k, arms = cfg.samples_per_prompt, cfg.best_of_n_arms()
    m = max(arms.values())
    candidate_prompts = [p for p in prompts for _ in range(k * m)]  # rows (i * k + j) * m + c: candidate c
    candidate_infos = [info for info in infos for _ in range(k * m)]
    candidates = generate(model, tokenizer, candidate_prompts, **settings)
    rewards = score_generations(proxy_terms, candidates, candidate_prompts, tokenizer, candidate_infos)["total"]
    rewards = rewards.double().numpy().reshape(len(prompts) * k, m)
    out = {}
    for arm, n in arms.items():
        rows = np.arange(len(rewards)) * m + choose(rewards, n)
        out[arm] = {
            "model": cfg.best_of_n_model(),
            "n": n,
            "candidates": m,
            "kl_bound": kl_bound(n),
            "replies": _select(candidates, rows),
            "kl_per_reply": measured_kl(rewards, n),
        }
    return out


def _select(generations, rows: np.ndarray):
    """The generations at the given (ascending) rows, keeping their batches' token layout."""
    import torch

    from rlhf.evaluation import Generations

    batches, offset = [], 0
    for batch in generations.batches:
        size = batch.response.shape[0]
        local = rows[(rows >= offset) & (rows < offset + size)] - offset
        if len(local):
            batches.append(batch.select(torch.as_tensor(local, device=batch.response.device)))
        offset += size
    return Generations(batches, [generations.texts[row] for row in rows])


def _explainers(judge_terms: list) -> dict[str, tuple[Any, bool]]:
    """{judge: (explain, takes info)} for the programmatic judges whose module has a per-rule `explain`."""
    from rlhf.rewards.sources import reward_module, takes_info

    out = {}
    for term in judge_terms:
        module = reward_module(term.function) if term.function is not None else None
        explain = getattr(module, "explain", None)
        if callable(explain):
            out[term.name] = (explain, takes_info(explain))
    return out


def _for_tokenizer(terms: list, same_tokens: bool) -> list:
    # A learned scorer reads sampled ids directly only when the sampling model shares its tokenizer; otherwise it
    # scores decoded text, which is always correct.
    return terms if same_tokens else [dataclasses.replace(t, shares_tokenizer=False) for t in terms]


def summarise(
    cfg: CompareStage, prompts: list[list[dict[str, str]]], generated: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]], list[dict]]:
    """Statistics, alarms and the side-by-side samples; returns (results.json content, measures, samples)."""
    from rlhf.compare.alarms import candidates, check_alarms
    from rlhf.compare.provenance import reward_accuracy
    from rlhf.compare.stats import analyse, rule_estimates

    measures = generated["measures"]
    score_names = (["proxy"] if cfg.proxy else []) + [j.name for j in cfg.judges]
    analysis = analyse(
        measures,
        cfg.reference_name(),
        compared=score_names,
        seed=cfg.seed,
        resamples=cfg.bootstrap_resamples,
        confidence=cfg.confidence,
    )
    by_model: dict[str, list[str]] = {}
    for record in generated["records"]:
        by_model.setdefault(record["model"], []).append(record["response"])
    corpus = {
        model: {
            "distinct_1": corpus_distinct_n((words(t) for t in texts), 1),
            "distinct_2": corpus_distinct_n((words(t) for t in texts), 2),
            "unique_responses": len(set(texts)) / len(texts),
        }
        for model, texts in by_model.items()
    }
    proxy = "proxy" if cfg.proxy else None
    alarms = check_alarms(analysis, proxy=proxy, judges=[j.name for j in cfg.judges], corpus=corpus)
    results = {
        "reference": analysis.reference,
        "n_prompts": analysis.n_prompts,
        "samples_per_prompt": analysis.samples_per_prompt,
        "bootstrap_resamples": analysis.resamples,
        "confidence": analysis.confidence,
        "seed": cfg.seed,
        "prompts": cfg.prompts.path,
        "decoding": cfg.rollout.model_dump(exclude={"missing_eos_penalty"}),
        "models": _arms(cfg, generated),
        "best_of_n": {
            arm: {**found, "kl_measured": _plain(analysis.summary[arm]["bon_kl"])}
            for arm, found in generated.get("best_of_n", {}).items()
        },
        "scores": score_names,
        "judges": [j.name for j in cfg.judges],
        "proxy": [p.model_dump() for p in cfg.proxy],
        "alarms": [dataclasses.asdict(a) for a in alarms],
        "alarms_checked_on": candidates(analysis, proxy),
        "notes": generated["notes"],
        **{
            key: _plain(getattr(analysis, key)) for key in ("summary", "differences", "win_rates", "length_correlation")
        },
        "corpus": corpus,
        "rules": {
            judge: _plain(
                rule_estimates(
                    by_model,
                    threshold=MATCH,
                    seed=cfg.seed,
                    resamples=cfg.bootstrap_resamples,
                    confidence=cfg.confidence,
                )
            )
            for judge, by_model in generated["rules"].items()
            if by_model
        },
        "match_threshold": MATCH,
        "match_rules": list(MATCH_RULES),
        "shares": generated["shares"],
        "reward_accuracy": reward_accuracy(cfg),
    }
    failure_judge = next(iter(generated["rules"]), None) or (cfg.judges[0].name if cfg.judges else None)
    found = _length_and_pairwise(cfg, measures, score_names, generated.get("pairwise", {}), failure_judge)
    results["win_rates"].update(found.pop("win_rates"))
    results.update(found)
    results["failures"] = _plain(_failures(cfg, prompts, generated["records"], failure_judge))
    results["failure_judge"] = failure_judge
    return results, measures, _samples(cfg, prompts, generated["records"])


def _length_and_pairwise(
    cfg: CompareStage, measures: dict, score_names: list[str], pairwise: dict, gold: str | None
) -> dict[str, Any]:
    """Length-controlled win rates of every score, and the pairwise judges' win rates, trust and agreement, on the
    bootstrap prompt indices of `analyse` (the same seed draws the same prompts: paired with the raw rates)."""
    from rlhf.compare import pairwise as pairwise_judges
    from rlhf.compare.length_control import length_controlled_matrix, score_matrices
    from rlhf.compare.stats import bootstrap_indices

    n_prompts = next(iter(next(iter(measures.values())).values())).shape[0]
    indices = bootstrap_indices(n_prompts, cfg.bootstrap_resamples, np.random.default_rng(cfg.seed))
    pointwise, controlled = {}, {}
    for score in score_names:
        outcomes, lengths = score_matrices(measures, score)
        pointwise[score] = outcomes
        controlled[score] = length_controlled_matrix(outcomes, lengths, indices, cfg.confidence)
    found = pairwise_judges.summarise(pairwise, pointwise, gold, indices, cfg.confidence)
    return {
        "pairwise_judges": list(pairwise),
        "length_controlled": _plain({**controlled, **found["length_controlled"]}),
        "win_rates": _plain(found["win_rates"]),
        "pairwise": _plain(found["pairwise"]),
    }


MATCH = 0.5
"""A judge's rule score at or above this counts as a match (intent-match and name-match rates)."""

MATCH_RULES = ("intent", "name")
"""Rules whose match rates the report puts in their own table: does the reply serve the customer's intent, does it
greet the name the customer signed with (rules of the content judge, `reward_models.support_content`)."""

FAILURES = 3
"""Lowest-scoring replies (on the failure judge) shown per compared model, next to the reference's reply."""


def _arms(cfg: CompareStage, generated: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{arm: {"path", "reference"}} for every row of the report, in report order (best-of-n after its model)."""
    models = {m.name: {"path": generated["paths"][m.name], "reference": m.path} for m in cfg.models}
    out = {}
    for name in cfg.arm_names():
        if name in models:
            out[name] = models[name]
        else:
            found = generated["best_of_n"][name]
            out[name] = {
                "path": models[found["model"]]["path"],
                "reference": f"best of {found['n']} replies of {found['model']}, picked by the proxy",
            }
    return out


def _failures(cfg: CompareStage, prompts: list[list[dict[str, str]]], records: list[dict], judge: str | None) -> list:
    """For each model but the reference: its `FAILURES` lowest replies on `judge` (distinct prompts), each next to
    the reference's reply to the same prompt and sample, so the report shows failures as well as typical replies."""
    if judge is None:
        return []
    reference = cfg.reference_name()
    by_key = {(r["model"], r["prompt_index"], r["sample"]): r for r in records}
    out = []
    for name in cfg.arm_names():
        if name == reference:
            continue
        own = sorted(
            (r for r in records if r["model"] == name and r.get(judge) is not None),
            key=lambda r: (r[judge], r["prompt_index"], r["sample"]),
        )
        seen: set[int] = set()
        for record in own:
            if record["prompt_index"] in seen:
                continue
            seen.add(record["prompt_index"])
            out.append(
                {
                    "model": name,
                    "judge": judge,
                    "prompt_index": record["prompt_index"],
                    "prompt": prompts[record["prompt_index"]][-1]["content"],
                    "responses": {
                        name: record,
                        reference: by_key[(reference, record["prompt_index"], record["sample"])],
                    },
                }
            )
            if len(seen) == FAILURES:
                break
    return out


def _samples(cfg: CompareStage, prompts: list[list[dict[str, str]]], records: list[dict]) -> list[dict]:
    """The report's side-by-side rows: seeded random prompts, the first sample of every model on each."""
    count = min(cfg.report_samples, len(prompts))
    chosen = sorted(np.random.default_rng(cfg.seed).choice(len(prompts), size=count, replace=False).tolist())
    first = {(r["model"], r["prompt_index"]): r for r in records if r["sample"] == 0}
    return [
        {
            "prompt_index": i,
            "prompt": prompts[i][-1]["content"],
            "responses": {name: first[(name, i)] for name in cfg.arm_names()},
        }
        for i in chosen
    ]


def _plain(value: Any) -> Any:
    """Dataclasses to dicts and NaN to None, so results.json is strict JSON."""
    if dataclasses.is_dataclass(value):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def training_curves(models: dict[str, dict[str, str]]) -> dict[str, Path]:
    """metrics.jsonl of every compared model that a ppo stage produced (found through its manifest)."""
    curves = {}
    for name, info in models.items():
        stage_dir = Path(info["path"]).parent
        manifest = stage_dir / "manifest.json"
        if manifest.is_file() and (stage_dir / METRICS).is_file():
            try:
                stage = json.loads(manifest.read_text()).get("stage")
            except json.JSONDecodeError:
                continue
            if stage == "ppo":
                curves[name] = stage_dir / METRICS
    return curves


def frontier_results(cfg: CompareStage, results: dict[str, Any]) -> dict[str, Any]:
    """results.json's "frontier": the in-loop points of every compared ppo-family run (`rlhf.compare.frontier`)
    and the best-of-n reference curve; {"runs": {}, ...} when no run recorded points (`frontier_every` off)."""
    from rlhf.compare import frontier

    stage_dirs = {model: path.parent for model, path in training_curves(results["models"]).items()}
    return {
        "runs": frontier.runs(stage_dirs, cfg.proxy, cfg.judges),
        "best_of_n": frontier.best_of_n_points(results),
    }


def _track(cfg: CompareStage, output_dir: Path, results: dict[str, Any], samples: list[dict]) -> None:
    """Sends the summary means and the side-by-side samples to the recipe's trackers (and metrics.jsonl)."""
    from rlhf.tracking import Tracker

    tracker = Tracker(cfg.tracking, output_dir, cfg.model_dump(mode="json"))
    tracker.log(
        {
            f"compare/{model}/{name}": est["mean"]
            for model, measures in results["summary"].items()
            for name, est in measures.items()
            if est["mean"] is not None
        },
        step=0,
    )
    tracker.log_samples(
        [{"prompt": s["prompt"], **{m: r["response"] for m, r in s["responses"].items()}} for s in samples], step=0
    )
    tracker.close()
