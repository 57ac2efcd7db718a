"""The ppo stage's in-loop evaluation: points of the over-optimisation frontier (Gao et al. 2022, "Scaling Laws for
Reward Model Overoptimization", fig. 1: gold and proxy reward against sqrt(KL) over training).

Every `frontier_every` steps, and before the first, the policy answers the held-out prompts through the closing
evaluation's own code (`rlhf.evaluation.evaluate_against_reference`, the policy's side alone) and the step's row of
metrics.jsonl gets the point; the closing evaluation gives the last point at no extra cost.

The replies are *sampled* with the rollout's temperature, not greedy: the x axis is the KL of the policy to the
reference, an expectation over the policy's own samples (the summed per-token log-ratio on a sample is an unbiased
estimate of it; on a greedy reply it estimates nothing). A fixed generator seed at every point (the recipe's, as in
the closing evaluation) makes the points common-random-number draws: while the policy is unchanged it writes the same
replies, so the differences along training are the policy's, not the sampler's, and the last in-loop point is the
closing evaluation itself.

Under several processes every rank generates every prompt (as the closing evaluation does: the ranks stay in step
through `all_ranks_done`) and the main process writes.
"""

from __future__ import annotations

import math

PREFIX = "frontier/"


def role(term) -> str:
    """What a reward term is on the frontier: 'gold' (weight 0: never trained on), 'proxy' (a learned reward model
    that is trained on), or 'reward' (another trained-on term, e.g. a programmatic one)."""
    if term.weight == 0:
        return "gold"
    return "proxy" if term.model is not None else "reward"


def due(step: int, every: int | None, total_steps: int) -> bool:
    """Whether the policy after `step` updates is evaluated in the loop (the closing evaluation covers the last).

    Args:
        step: Updates done so far (0: before training).
        every: `frontier_every`; None: never.
        total_steps: The run's steps.
    """
    return every is not None and step % every == 0 and step < total_steps


def point(results: dict, terms) -> dict[str, float]:
    """The frontier metrics of one evaluation (`evaluate_against_reference`'s keys for the policy).

    A KL estimate below 0 (a sampled k1 mean of a policy very close to its reference) counts as 0 under the root.
    """
    kl = results["eval_kl_to_reference_mean"]
    out = {
        f"{PREFIX}kl": kl,
        f"{PREFIX}sqrt_kl": math.sqrt(max(kl, 0.0)),
        f"{PREFIX}length": results["eval_policy_length_mean"],
    }
    for term in terms:
        out[f"{PREFIX}{role(term)}/{term.name}"] = results[f"eval_policy_{term.name}_mean"]
    return out


def evaluate(policy, ref_policy, tokenizer, terms, prompts, cfg, accelerator, infos) -> dict[str, float]:
    """One in-loop point: the policy answers the held-out prompts; returns its frontier metrics.

    Weights must already be whole on this process (the stage wraps the call in `gathered_weights` under ZeRO-3).
    """
    from rlhf.evaluation import evaluate_against_reference

    results = evaluate_against_reference(
        policy, ref_policy, tokenizer, terms, prompts, cfg, accelerator, infos, reference=False
    )
    return point(results, terms)
