"""The ppo loop's learning-rate schedules: transformers' four `lr_scheduler` names, as plain `LambdaLR`s.

The formulas are those of `transformers.optimization` (tests compare them step by step), written here because
importing that module pulls in `transformers.trainer_utils` and, through it, peft: about 10 MB of resident memory
in every ppo run, LoRA or not. The Trainer stages keep transformers' own.
"""

from __future__ import annotations

import functools
import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warmup(step: int, warmup_steps: int) -> float:
    return step / max(1, warmup_steps)


def _linear(step: int, *, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def _cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))  # half a cosine period, transformers' default


def _constant_with_warmup(step: int, *, warmup_steps: int, total_steps: int) -> float:
    del total_steps
    return _warmup(step, warmup_steps) if step < warmup_steps else 1.0


def _constant(step: int, *, warmup_steps: int, total_steps: int) -> float:
    del step, warmup_steps, total_steps
    return 1.0


SCHEDULES = {
    "linear": _linear,
    "cosine": _cosine,
    "constant": _constant,
    "constant_with_warmup": _constant_with_warmup,
}


def learning_rate_schedule(optimizer: Optimizer, name: str, warmup_steps: int, total_steps: int) -> LambdaLR:
    """A `LambdaLR` over `optimizer` for the recipe's `training.lr_scheduler` (one of `SCHEDULES`).

    Args:
        optimizer: The optimiser whose groups' learning rates are scaled.
        name: linear, cosine, constant or constant_with_warmup (transformers' meanings; constant has no warm-up).
        warmup_steps: Optimiser steps of linear warm-up from 0.
        total_steps: Optimiser steps in the run (linear and cosine reach 0 there).
    """
    factor = functools.partial(SCHEDULES[name], warmup_steps=warmup_steps, total_steps=total_steps)
    return LambdaLR(optimizer, factor)
