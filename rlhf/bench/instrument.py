"""Counts and times every forward pass of a stage run from outside the stage's code.

While an `Instrumentation` is active, every Llama causal LM or sequence classifier that gets built has forward hooks
on its transformer body and its output head, and every `Tracker.log` call is time-stamped with the process's peak
RSS. The stage itself is not changed: the hooks read shapes and time, so the counts follow whatever passes the loop
makes (a pass added or removed shows up without touching the benchmark).

Each pass is attributed to a model and a phase:

* model: `policy` / `ref_policy` (causal LMs with and without trainable weights), `value` / `reward` (sequence
  classifiers with and without trainable weights). Under LoRA the reference is the policy with its adapter off, so
  its passes count as `policy` passes of the score phase.
* phase: `generate` (a KV cache was passed in), `update` (gradients enabled), `score` (anything else).

The cache argument is read under each name transformers has given it: `past_key_values` (up to 5.23) and `cache`
(5.24 renamed it, keeping the old name as a deprecated alias until 5.40). Reading only one name made the generation
passes look like score passes on the other versions, so the benchmark silently stopped counting generation FLOPs.

Score and update passes are also counted as useful work: each row's real tokens (from the attention mask) through
the body, and the head positions whose input is a real token, so that padded FLOPs are the executed minus the
useful ones. With `ppo_phases`, the resident memory (VmHWM and VmRSS) is recorded around the ppo loop's first
rollout, score and update calls.

The hooks cost a few microseconds per model call (four per call), well under 1% of a decoding step of the tiny model.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from rlhf.bench.flops import Generation, head_flops, trunk_flops
from rlhf.bench.probe import status_kb

# The ppo loop's phase functions whose first call `Instrumentation(ppo_phases=True)` brackets with memory readings,
# and the label of each reading.
PPO_PHASES = {"collect_rollout": "rollout", "score": "score", "update_policy": "update"}

# The KV-cache keyword of a transformers forward, newest name first (5.24 renamed `past_key_values` to `cache`).
CACHE_KEYWORDS = ("cache", "past_key_values")


def cache_argument(kwargs: dict[str, Any]) -> Any:
    """Returns the KV cache passed to a transformers forward under either of its names, or None.

    Args:
        kwargs: The keyword arguments of the forward call, as a forward pre-hook sees them (before transformers'
            own deprecation shim renames the old keyword).

    Returns:
        The cache object, or None when the call carries no cache.
    """
    for name in CACHE_KEYWORDS:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None


@dataclass
class StepLog:
    """One `Tracker.log` call: when (perf_counter), the peak RSS so far (kB) and the metrics."""

    at: float
    peak_kb: int
    step: int
    metrics: dict[str, Any]


@dataclass
class _Model:
    kind: str  # "causal" or "seqcls"
    config: Any
    module: Any
    role: str | None = None
    train_factor: int = 3  # forward + backward FLOPs over forward: 3, or 2 when the base weights are frozen (LoRA)
    phase: str = "score"
    opened: tuple | None = None
    head_opened: tuple | None = None
    mask: Any = None  # the attention mask of the body call in flight, for the head's useful positions


@dataclass
class Instrumentation:
    """Context manager: hooks the models built inside it and records passes and tracker logs.

    Attributes:
        passes: (role, phase, batch, new tokens, attended keys, seconds, FLOPs) per transformer-body call.
        heads: (role, phase, positions, seconds, FLOPs) per output-head call.
        logs: every `Tracker.log` call, in order.
        generations: one `Generation` per sampling call of the policy (prompt width and tokens sampled).
        useful: (role, phase, real tokens, FLOPs on them) per score or update body and head call (a head call's
            tokens are 0: its positions are not tokens of the pass).
        memory: {label: {"hwm_mb", "rss_mb"}} read by `mark` (with `ppo_phases`: "setup" before the first rollout,
            then "rollout", "score" and "update" after the first call of each).
        ppo_phases: Bracket the ppo loop's phase functions with memory readings.
    """

    ppo_phases: bool = False
    passes: list[tuple] = field(default_factory=list)
    heads: list[tuple] = field(default_factory=list)
    logs: list[StepLog] = field(default_factory=list)
    generations: list[Generation] = field(default_factory=list)
    useful: list[tuple] = field(default_factory=list)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    models: list[_Model] = field(default_factory=list)
    _restore: list[tuple] = field(default_factory=list)

    def __enter__(self) -> Instrumentation:
        from transformers.models.llama import modeling_llama

        from rlhf.tracking import Tracker

        self._patch(modeling_llama.LlamaForCausalLM, "causal")
        self._patch(modeling_llama.LlamaForSequenceClassification, "seqcls")
        self._patch_decoder()
        original_log = Tracker.log
        logs = self.logs

        def log(tracker, metrics, step):
            logs.append(StepLog(time.perf_counter(), status_kb("VmHWM"), step, dict(metrics)))
            return original_log(tracker, metrics, step)

        Tracker.log = log
        self._restore.append((Tracker, "log", original_log))
        if self.ppo_phases:
            self._patch_ppo_phases()
        return self

    def mark(self, label: str) -> None:
        """Records this process's peak (VmHWM) and current (VmRSS) resident memory under `label`, in MB."""
        self.memory[label] = {"hwm_mb": status_kb("VmHWM") / 1024, "rss_mb": status_kb("VmRSS") / 1024}

    def _patch_ppo_phases(self) -> None:
        """Reads the memory before the first rollout (setup and model loading done) and after each phase's first
        call; the loop calls the phases through the module's globals, so replacing them there is enough."""
        from rlhf.stages import ppo

        for name, label in PPO_PHASES.items():
            original = getattr(ppo, name)

            def wrapped(*args, _original=original, _label=label, **kwargs):
                if _label == "rollout" and "setup" not in self.memory:
                    self.mark("setup")
                result = _original(*args, **kwargs)
                if _label not in self.memory:
                    self.mark(_label)
                return result

            setattr(ppo, name, wrapped)
            self._restore.append((ppo, name, original))

    def __exit__(self, *exc) -> None:
        for owner, name, value in reversed(self._restore):
            setattr(owner, name, value)
        self._restore.clear()

    def _patch(self, cls, kind: str) -> None:
        original_init = cls.__init__
        instrumentation = self

        def __init__(model, *args, **kwargs):
            original_init(model, *args, **kwargs)
            instrumentation._attach(model, kind)

        cls.__init__ = __init__
        self._restore.append((cls, "__init__", original_init))

    def _patch_decoder(self) -> None:
        """Counts the lean decoder's steps (it runs the policy's weights without calling the model's forward)."""
        from rlhf.generation.decoding import LlamaDecoder

        original = LlamaDecoder._forward
        instrumentation = self

        def _forward(decoder, ids, position_ids, mask):
            batch, n_q = ids.shape
            n_kv = decoder.length + n_q
            if decoder.length == 0:  # the prefill of a new sampling call
                instrumentation.generations.append(Generation(batch, n_q, 0))
            instrumentation.generations[-1].steps += 1
            t0 = time.perf_counter()
            logits = original(decoder, ids, position_ids, mask)
            seconds = time.perf_counter() - t0
            config = decoder.config
            body = trunk_flops(config, batch, n_q, n_kv)
            head = head_flops(batch, config.hidden_size, config.vocab_size)
            # Body and head share one call here: the time goes to the body, the head's FLOPs to the head.
            instrumentation.passes.append(("policy", "generate", batch, n_q, n_kv, seconds, body))
            instrumentation.heads.append(("policy", "generate", batch, 0.0, head))
            return logits

        LlamaDecoder._forward = _forward
        self._restore.append((LlamaDecoder, "_forward", original))

        # On CUDA the steps after the prefill (which is the lean decoder's, counted above) are GraphDecoder's own.
        from rlhf.generation.decoding import GraphDecoder

        original_step = GraphDecoder.step

        def step(decoder, tokens, position_ids):
            batch, n_kv = tokens.shape[0], decoder.length + 1
            instrumentation.generations[-1].steps += 1
            t0 = time.perf_counter()
            logits = original_step(decoder, tokens, position_ids)
            seconds = time.perf_counter() - t0
            config = decoder.config
            instrumentation.passes.append(
                ("policy", "generate", batch, 1, n_kv, seconds, trunk_flops(config, batch, 1, n_kv))
            )
            instrumentation.heads.append(
                ("policy", "generate", batch, 0.0, head_flops(batch, config.hidden_size, config.vocab_size))
            )
            return logits

        GraphDecoder.step = step
        self._restore.append((GraphDecoder, "step", original_step))

    def _attach(self, model, kind: str) -> None:
        import torch

        entry = _Model(kind, model.config, model)
        self.models.append(entry)
        trunk = getattr(model, model.base_model_prefix)
        head = model.lm_head if kind == "causal" else model.score

        def trunk_pre(module, args, kwargs):
            if entry.role is None:
                self._settle_role(entry)
            ids = kwargs.get("input_ids")
            if ids is None:
                ids = args[0] if args else kwargs.get("inputs_embeds")
            batch, n_q = ids.shape[0], ids.shape[1]
            cache = cache_argument(kwargs)
            mask = kwargs.get("attention_mask")
            if mask is not None and mask.dim() == 2:
                n_kv = mask.shape[1]
            else:
                n_kv = n_q + (cache.get_seq_length() if cache is not None else 0)
            if cache is not None:
                entry.phase = "generate"
                if n_kv == n_q:  # an empty cache: the prefill of a new sampling call
                    self.generations.append(Generation(batch, n_q, 0))
                self.generations[-1].steps += 1
            else:
                entry.phase = "update" if torch.is_grad_enabled() else "score"
            entry.mask = mask if entry.phase != "generate" and mask is not None and mask.dim() == 2 else None
            entry.opened = (batch, n_q, n_kv, time.perf_counter())

        def trunk_post(module, args, kwargs, output):
            batch, n_q, n_kv, t0 = entry.opened
            factor = entry.train_factor if entry.phase == "update" else 1
            flops = trunk_flops(entry.config, batch, n_q, n_kv) * factor
            self.passes.append((entry.role, entry.phase, batch, n_q, n_kv, time.perf_counter() - t0, flops))
            if entry.phase != "generate":
                # Each row through the body at its real length alone: what the pass would cost with no padding.
                lengths = entry.mask.sum(1).tolist() if entry.mask is not None else [n_q] * batch
                useful = sum(trunk_flops(entry.config, 1, int(n), int(n)) for n in lengths) * factor
                self.useful.append((entry.role, entry.phase, int(sum(lengths)), useful))

        def head_pre(module, args):
            hidden = args[0]
            kept = hidden.shape[-2] if hidden.dim() > 2 else 1
            entry.head_opened = (hidden.shape[:-1].numel(), kept, time.perf_counter())

        def head_post(module, args, output):
            positions, kept, t0 = entry.head_opened
            factor = entry.train_factor if entry.phase == "update" else 1
            flops = head_flops(positions, module.in_features, module.out_features) * factor
            self.heads.append((entry.role, entry.phase, positions, time.perf_counter() - t0, flops))
            if entry.phase != "generate":
                # The head runs on the last `kept` positions (a value window ending one column earlier is off by at
                # most one position per row): the useful ones are those whose input token is real.
                real = int(entry.mask[:, -kept:].sum()) if entry.mask is not None else positions
                useful = head_flops(real, module.in_features, module.out_features) * factor
                self.useful.append((entry.role, entry.phase, 0, useful))

        trunk.register_forward_pre_hook(trunk_pre, with_kwargs=True)
        trunk.register_forward_hook(trunk_post, with_kwargs=True)
        head.register_forward_pre_hook(head_pre)
        head.register_forward_hook(head_post)

    @staticmethod
    def _settle_role(entry: _Model) -> None:
        """Names a model at its first forward, when the stage has already frozen what it does not train."""
        named = list(entry.module.named_parameters())
        trainable = any(p.requires_grad for _, p in named)
        base_trainable = any(p.requires_grad for n, p in named if "lora_" not in n)
        if entry.kind == "causal":
            entry.role = "policy" if trainable else "ref_policy"
        else:
            entry.role = "value" if trainable else "reward"
        entry.train_factor = 3 if base_trainable else 2

    def forward_summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """{phase: {role: {calls, seconds, tokens, flops}}} over body and head calls (a head call is not a call)."""
        out: dict[str, dict[str, dict[str, float]]] = defaultdict(
            lambda: defaultdict(lambda: {"calls": 0, "seconds": 0.0, "tokens": 0, "flops": 0})
        )
        for role, phase, batch, n_q, _n_kv, seconds, flops in self.passes:
            cell = out[phase][role]
            cell["calls"] += 1
            cell["seconds"] += seconds
            cell["tokens"] += batch * n_q
            cell["flops"] += flops
        for role, phase, _positions, seconds, flops in self.heads:
            cell = out[phase][role]
            cell["seconds"] += seconds
            cell["flops"] += flops
        for role, phase, tokens, flops in self.useful:
            cell = out[phase][role]
            cell["useful_tokens"] = cell.get("useful_tokens", 0) + tokens
            cell["useful_flops"] = cell.get("useful_flops", 0) + flops
        return {phase: {role: dict(cell) for role, cell in roles.items()} for phase, roles in out.items()}

    def padding_summary(self) -> dict[str, dict[str, float]]:
        """{phase: tokens, useful_tokens, padded_token_share, flops, useful_flops, padded_flops, padded_flop_share}
        for the score and update phases, over every model (bodies and heads)."""
        out = {}
        for phase in ("score", "update"):
            tokens = sum(p[2] * p[3] for p in self.passes if p[1] == phase)
            flops = sum(p[-1] for p in self.passes if p[1] == phase) + sum(h[-1] for h in self.heads if h[1] == phase)
            useful_tokens = sum(u[2] for u in self.useful if u[1] == phase)
            useful_flops = sum(u[3] for u in self.useful if u[1] == phase)
            out[phase] = {
                "tokens": tokens,
                "useful_tokens": useful_tokens,
                "padded_token_share": 1 - useful_tokens / tokens if tokens else 0.0,
                "flops": flops,
                "useful_flops": useful_flops,
                "padded_flops": flops - useful_flops,
                "padded_flop_share": 1 - useful_flops / flops if flops else 0.0,
            }
        return out

    def total_flops(self) -> int:
        """Executed model FLOPs of every pass seen (bodies and heads)."""
        return sum(p[-1] for p in self.passes) + sum(h[-1] for h in self.heads)
