"""Where the compare report's scorers come from: what each shares with the training signal, and how well the learned
proxy did on its held-out pairs (per category), read from the stage manifests next to the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhf.config import CompareStage


def shared_with_training(cfg: CompareStage, proxy_terms: list, judge_terms: list) -> list[dict[str, Any]]:
    """For every proxy term and judge: what it shares with the signal the policy was trained on.

    A programmatic scorer states it itself (its module's `SHARES_WITH_TRAINING`; "not declared" without one); a
    learned reward model was trained on preference pairs, named by the data hashes in its stage's manifest.
    """
    from rlhf.rewards.implicit import ImplicitReward
    from rlhf.rewards.sources import reward_module

    sources = {s.name: s for s in [*cfg.proxy, *cfg.judges]}
    out = []
    for role, terms in (("proxy", proxy_terms), ("judge", judge_terms)):
        for term in terms:
            source = sources[term.name]
            entry: dict[str, Any] = {"name": term.name, "role": role, "source": source.function or source.spec}
            if term.function is not None:
                statement = getattr(reward_module(term.function), "SHARES_WITH_TRAINING", None)
                entry["statement"] = statement if isinstance(statement, str) else "not declared"
            else:
                manifest = _stage_manifest(sources[term.name].model)
                data = (manifest or {}).get("data") or {}
                entry["source"] = sources[term.name].model
                entry["data"] = data
                hashes = ", ".join(f"{Path(path).name} sha256 {digest[:12]}" for path, digest in data.items())
                entry["statement"] = "trained on the preference pairs" + (f" ({hashes})" if hashes else "")
                if isinstance(term.model, ImplicitReward):  # what the score is, since it is not a classifier's logit
                    against = term.model.reference.name_or_path if term.model.reference is not None else "its base"
                    entry["statement"] += (
                        f"; an implicit reward model: beta {term.model.beta:g} x log(pi / pi_ref) of the reply, "
                        f"pi_ref = {against}"
                    )
            out.append(entry)
    return out


def _stage_manifest(model_dir: str | None) -> dict[str, Any] | None:
    """The manifest of the stage that wrote `model_dir` (a final/ directory), or None."""
    if model_dir is None:
        return None
    path = Path(model_dir).parent / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def reward_accuracy(cfg: CompareStage) -> dict[str, dict[str, Any]]:
    """Held-out accuracy of each learned proxy, overall, per category and per `category/rule`, from its reward stage's
    manifest."""
    out = {}
    for source in cfg.proxy:
        manifest = _stage_manifest(source.model)
        if manifest is None or manifest.get("stage") != "reward":
            continue
        results = manifest.get("results") or {}
        out[source.name] = {
            "model": source.model,
            "accuracy": results.get("eval_accuracy"),
            "pairs": results.get("eval_pairs"),
            "accuracy_by_category": results.get("accuracy_by_category") or {},
            "accuracy_by_rule": results.get("accuracy_by_rule") or {},
        }
    return out
