"""What the ppo loop carries: the state a checkpoint holds, and the containers one step's phases hand on.

`rlhf.stages.ppo` runs the loop; this module only says what flows through it. `PPOState` is everything that changes
from step to step, so a checkpoint is exactly `PPOState.save` and resuming is `PPOState.load`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhf import checkpoint as ckpt
from rlhf.config import PPOStage
from rlhf.generation.sampling import Batch
from rlhf.ppo import functional as F
from rlhf.rewards.sources import RunningMoments


@dataclass
class Setup:
    """What the loop reads and never changes: the recipe, the launch, the frozen models, the prompts."""

    cfg: PPOStage
    accelerator: Any
    tokenizer: Any
    ref_policy: Any  # None with LoRA: the policy with its adapter disabled is the reference
    terms: list
    prompts: list
    infos: list[dict]
    encoded: list[list[int]]
    total_steps: int
    recompute_logprobs: bool = False  # the old log-probs come from a training forward, not the sampler

    @property
    def group_size(self) -> int:
        return self.cfg.rollout.samples_per_prompt


@dataclass
class PPOState:
    """Everything that changes from step to step, and so everything a checkpoint holds.

    A checkpoint is `model` and `optimizer` saved by `accelerator.save_state` (every rank writes its ZeRO shards) plus
    `state_dict()` saved per rank; `load` restores both, after which the run continues exactly as if uninterrupted.
    """

    model: Any  # the prepared ActorCritic: a DDP module or a DeepSpeed engine
    optimizer: Any
    scheduler: Any
    kl_ctl: F.FixedKLController | F.AdaptiveKLController
    moments: RunningMoments
    generator: torch.Generator  # this rank's sampling and minibatch-order generator
    step: int = 0
    history: list[float] = field(default_factory=list)  # reward/total per step, for the first/last-10% trend

    def state_dict(self) -> dict[str, Any]:
        """This rank's loop state besides weights and optimiser moments."""
        return {
            "step": self.step,
            "scheduler": self.scheduler.state_dict(),
            "kl_controller": self.kl_ctl.state_dict(),
            "reward_moments": self.moments.state_dict(),
            "rng": ckpt.save_rng_states(self.generator),
            "reward_history": list(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict` returned."""
        self.scheduler.load_state_dict(state["scheduler"])
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.moments.load_state_dict(state["reward_moments"])
        ckpt.load_rng_states(state["rng"], self.generator)
        self.step, self.history = state["step"], list(state["reward_history"])

    def save(self, directory: Path, accelerator) -> None:
        """Writes this rank's part of a checkpoint into `directory`."""
        accelerator.save_state(str(directory / "accelerate"))
        torch.save(self.state_dict(), directory / f"ppo_state_rank{accelerator.process_index}.pt")

    def load(self, directory: Path, accelerator) -> None:
        """Restores this rank's part of the checkpoint in `directory`."""
        accelerator.load_state(str(directory / "accelerate"))
        self.load_state_dict(
            torch.load(directory / f"ppo_state_rank{accelerator.process_index}.pt", weights_only=False)
        )


@dataclass
class Rollout:
    """One step's responses on this rank: k per prompt, a prompt's k responses in consecutive rows."""

    index: list[int]  # the prompt of each row
    batch: Batch
    logprobs: torch.Tensor  # [B, R] the sampler's log-probabilities (the old policy's)
    entropy: torch.Tensor  # mean per-token entropy over real tokens


@dataclass
class Scored:
    """What the reward terms, the reference and the value function say about a rollout."""

    prompt_texts: list[str]
    response_texts: list[str]
    term_scores: dict[str, torch.Tensor]  # [B] per reward term, unweighted
    raw_total: torch.Tensor  # [B] weighted sum of the terms
    scores: torch.Tensor  # [B] after the missing-EOS penalty, normalisation and clipping: what is optimised
    ref_logprobs: torch.Tensor  # [B, R]
    values: torch.Tensor | None  # [B, R] (gae only)
    old_logprobs: torch.Tensor  # [B, R] what the update's ratio starts from: the sampler's, or a training forward's


@dataclass
class Estimate:
    """Per-token advantages, value targets (gae only) and the KL to the reference."""

    advantages: torch.Tensor
    returns: torch.Tensor | None
    kl: torch.Tensor
