"""The ppo stage: our own PPO (Ziegler et al. 2019; Ouyang et al. 2022), an explicit loop read top to bottom.

Each step runs five phases, one function each, over one `PPOState` (`rlhf.ppo.state`: what a checkpoint holds):

1. rollout: sample `rollout.samples_per_prompt` responses for each of this rank's prompts from the policy;
2. score: every reward term, the reference log-probabilities and (for GAE) the values;
3. advantages: the KL to the reference (in the reward or kept for the loss) and the chosen estimator
   (`rlhf.ppo.advantages`: gae, grpo, rloo, reinforce_pp);
4. update: `update.epochs` passes of clipped minibatch updates, minibatches of whole prompt groups;
5. log and checkpoint.

A different estimator changes `estimate_advantages` alone, a different rollout backend `collect_rollout` alone. The
maths lives in `rlhf.ppo.functional` and `rlhf.ppo.advantages` as pure functions.

Under `accelerate launch` each process takes its share of every step's prompts, with all k responses to a prompt on
the same process; logged means, reward moments and batch-wide whitening are reduced over all of them. Policy and
value train as one DDP module or DeepSpeed engine (the policy alone when the estimator needs no critic); ref_policy
and learned rewards stay frozen (sharded inference engines under ZeRO-3). `rlhf.distributed` holds the
launch-specific parts.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path

import torch

from rlhf import allocator
from rlhf import checkpoint as ckpt
from rlhf.artifacts import FINAL, check_parent, data_hashes, write_manifest, write_recipe
from rlhf.config import PPOStage
from rlhf.distributed import unwrap
from rlhf.evaluation import evaluate_against_reference
from rlhf.generation.sampling import Batch, encode_prompts, left_pad, response_mask, sample
from rlhf.ppo import advantages as A
from rlhf.ppo import frontier
from rlhf.ppo import functional as F
from rlhf.ppo.models import ActorCritic, disable_dropout, response_logits
from rlhf.ppo.schedule import learning_rate_schedule
from rlhf.ppo.state import Estimate, PPOState, Rollout, Scored, Setup
from rlhf.rewards.implicit import ImplicitReward, is_implicit
from rlhf.rewards.sources import RunningMoments, build_reward_terms, last_user_message, load_prompt_info

logger = logging.getLogger("rlhf")


class NonFiniteError(RuntimeError):
    """A loss or reward became NaN or infinite; the run stops before writing anything from this step."""


def run(cfg: PPOStage) -> Path:
    """Runs PPO (or a critic-free estimator) and returns the output directory.

    Leaves `final/` (the policy, merged weights or a PEFT adapter, with its tokenizer), `recipe.yaml`,
    `metrics.jsonl` and `manifest.json` (naming the sft and reward artifacts) in `cfg.output_dir`.
    """
    from rlhf.distributed import release_accelerator_state

    try:
        return _run(cfg)
    finally:
        release_accelerator_state()


def _run(cfg: PPOStage) -> Path:
    # accelerate's set_seed seeds what transformers' does (random, numpy, torch, CUDA) without importing
    # transformers.trainer_utils, which imports peft (10 MB) even where no adapter is trained.
    from accelerate.utils import set_seed

    from rlhf.distributed import (
        configure_deepspeed,
        cuda_available,
        full_state_dict,
        gathered_weights,
        launch_summary,
        make_accelerator,
        prepare_frozen,
    )
    from rlhf.models.loading import load_causal_lm, load_tokenizer, peft_config, resolve_model_path
    from rlhf.precision import resolve_mixed_precision
    from rlhf.stages.hf_trainer import load_rows
    from rlhf.tracking import Tracker

    started = time.time()
    output_dir = Path(cfg.output_dir)
    t, u = cfg.training, cfg.update
    # bf16 autocast (training.mixed_precision): the prepared model's forward runs under it (Accelerate wraps it), and
    # sampling and scoring enter `accelerator.autocast()` themselves; weights and optimiser state stay float32.
    precision = resolve_mixed_precision(t.mixed_precision, "cuda" if cuda_available() else "cpu", "ppo")
    accelerator = make_accelerator(
        cfg.model.dtype,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        **({"mixed_precision": "bf16"} if precision == "bf16" else {}),
    )
    set_seed(cfg.seed)

    # ---- Set up: data, the models, optimiser, trackers.
    prompts = [row["prompt"] for row in load_rows(cfg.data, "prompts", "train")]
    eval_prompts = [row["prompt"] for row in load_rows(cfg.data, "prompts", "eval") or []]
    policy_path = resolve_model_path(cfg.model.name_or_path)
    parents = {"policy": check_parent(policy_path)}
    tokenizer = load_tokenizer(cfg.model, policy_path, padding_side="left")
    policy = load_causal_lm(cfg.model, policy_path)
    if cfg.model.lora is not None:
        from peft import get_peft_model

        # ref_policy is the same base with the adapter disabled: one copy of the base weights serves both.
        policy = get_peft_model(policy, peft_config(cfg.model.lora, "CAUSAL_LM"))
        ref_policy = None
    else:
        ref_policy = load_causal_lm(cfg.model, policy_path).eval().requires_grad_(False)
    # An implicit reward model whose reference is the sft model (the usual case) reads it from ref_policy: one copy of
    # those weights in memory, not two.
    shared = (policy_path, ref_policy) if ref_policy is not None and cfg.model.revision is None else None
    terms = build_reward_terms(cfg.rewards, tokenizer, cfg.model.dtype, cfg.model.trust_remote_code, shared)
    for term in terms:
        if isinstance(term.model, ImplicitReward) and term.model.shares_reference:
            logger.info("ppo: reward '%s' takes its reference from ppo's reference policy (one copy)", term.name)
    # Each prompt row's other columns (e.g. its ground truth), for reward functions that take `info`; indexed like
    # the prompts, so every rank's shuffled share of a step carries its own rows.
    infos, eval_infos = [{} for _ in prompts], [{} for _ in eval_prompts]
    if any(term.wants_info for term in terms):
        infos = load_prompt_info(cfg.data.train, cfg.data.split, cfg.data.max_train_rows)
        eval_infos = load_prompt_info(cfg.data.eval, "test", cfg.data.max_eval_rows) if eval_prompts else []
    for source in cfg.rewards:
        if source.model is not None:
            parents[f"reward/{source.name}"] = check_parent(source.model)
    actor_critic = ActorCritic(policy, **_value_model(cfg, policy, parents))
    disable_dropout(actor_critic)
    if cfg.training.gradient_checkpointing:
        policy.gradient_checkpointing_enable()

    world = accelerator.num_processes
    per_rank = t.batch_size
    steps_per_epoch = len(prompts) // (per_rank * world)
    if steps_per_epoch == 0:
        raise ValueError(f"ppo: {len(prompts)} prompts cannot fill one batch of {per_rank} x {world} processes")
    total_steps = t.max_steps or max(1, int(t.epochs * steps_per_epoch))
    updates_per_step = u.epochs * u.num_minibatches
    # The fused kernel updates every tensor in one pass over memory: on the small benchmark model the optimiser
    # step fell from 119 ms to 37 ms (the for-each default reads and writes each state tensor ~10 times).
    optimizer = torch.optim.AdamW(
        actor_critic.param_groups(t.learning_rate, cfg.value.learning_rate or t.learning_rate, t.weight_decay),
        fused=True,
    )
    scheduler = learning_rate_schedule(
        optimizer,
        t.lr_scheduler,
        warmup_steps=int(t.warmup_ratio * total_steps * updates_per_step),
        total_steps=total_steps * updates_per_step,
    )
    # No dataloader tells DeepSpeed the micro-batch: the loop's own is set before prepare (with the clipping norm).
    configure_deepspeed(accelerator, micro_batch_size=_micro_batch(cfg), max_grad_norm=t.max_grad_norm)
    model, optimizer = accelerator.prepare(actor_critic, optimizer)
    launch = launch_summary(accelerator, unwrap(accelerator, model).policy)
    # ref_policy and learned rewards: inference replicas, or sharded DeepSpeed engines under ZeRO-3.
    if ref_policy is not None:
        ref_policy = prepare_frozen(accelerator, ref_policy)
    for term in terms:
        if isinstance(term.model, ImplicitReward):  # two causal LMs, each prepared like the reference policy
            term.model.prepare(functools.partial(prepare_frozen, accelerator), shared=ref_policy)
        elif term.model is not None:
            term.model = prepare_frozen(accelerator, term.model)

    setup = Setup(
        cfg=cfg,
        accelerator=accelerator,
        tokenizer=tokenizer,
        ref_policy=ref_policy,
        terms=terms,
        prompts=prompts,
        infos=infos,
        encoded=encode_prompts(tokenizer, prompts, cfg.data.max_prompt_length),
        total_steps=total_steps,
        recompute_logprobs=_recompute_logprobs(cfg.rollout.recompute_logprobs, cfg.model.dtype, accelerator),
    )
    state = PPOState(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        kl_ctl=F.AdaptiveKLController(cfg.kl.coef, cfg.kl.target, cfg.kl.horizon)
        if cfg.kl.adaptive
        else F.FixedKLController(cfg.kl.coef),
        moments=RunningMoments(),
        generator=torch.Generator().manual_seed(cfg.seed + accelerator.process_index),
    )

    # Resume from the latest complete checkpoint when there is one (and it was written by the same recipe and data).
    root = output_dir / ckpt.CHECKPOINTS
    fingerprint = ckpt.resume_fingerprint(cfg, parents)
    resume_from = ckpt.prepare_resume(root, fingerprint, cfg.resume, main=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    if resume_from is not None:
        state.load(resume_from, accelerator)

    def save_checkpoint(step: int) -> None:
        with ckpt.atomic_directory(
            ckpt.step_dir(root, step),
            fingerprint,
            step,
            main=accelerator.is_main_process,
            token=str(step),
            barrier=accelerator.wait_for_everyone,
        ) as tmp:
            state.save(tmp, accelerator)
        if accelerator.is_main_process:
            ckpt.prune(root, t.save_total_limit)

    if accelerator.is_main_process:
        write_recipe(cfg, output_dir)
    tracker = Tracker(
        cfg.tracking,
        output_dir,
        cfg.model_dump(mode="json"),
        enabled=accelerator.is_main_process,
        resume_step=state.step if resume_from is not None else None,
    )
    logger.info(
        "ppo: %d prompts, %d steps of %d x %d prompts x %d responses, advantage=%s, value=%s, lora=%s",
        len(prompts),
        total_steps,
        per_rank,
        world,
        setup.group_size,
        cfg.advantage.estimator,
        cfg.value.mode if cfg.advantage.estimator == "gae" else "none",
        cfg.model.lora is not None,
    )

    def frontier_point() -> dict[str, float]:
        """The policy as it is now on the held-out prompts (`rlhf.ppo.frontier`), and what that took."""
        frontier_started = time.perf_counter()
        unwrapped = unwrap(accelerator, model)
        with gathered_weights(accelerator, model, unwrapped.policy), gathered_weights(accelerator, ref_policy):
            found = frontier.evaluate(
                unwrapped.policy, ref_policy, tokenizer, terms, eval_prompts, cfg, accelerator, eval_infos
            )
        return {**found, "time/frontier": time.perf_counter() - frontier_started}

    # The point before training (policy == reference); a resumed run has it already (rows up to its checkpoint stay).
    if state.step == 0 and frontier.due(0, cfg.frontier_every, total_steps):
        tracker.log(frontier_point(), step=0)

    # ---- Train: rollout -> score -> advantages -> update -> log/checkpoint.
    progress = _progress(total_steps, accelerator.is_main_process)
    first_step = state.step
    for step in range(first_step, total_steps):
        step_started = time.perf_counter()
        rollout = collect_rollout(setup, state, step)
        rollout_time = time.perf_counter() - step_started

        score_started = time.perf_counter()
        scored = score(setup, state, rollout)
        estimate = estimate_advantages(setup, state, rollout, scored)
        score_time = time.perf_counter() - score_started
        allocator.trim()  # rollout caches and scoring logits are gone: hand their pages back before the update

        update_started = time.perf_counter()
        stats = update_policy(setup, state, rollout, scored, estimate)
        update_time = time.perf_counter() - update_started

        timings = {"rollout": rollout_time, "score": score_time, "update": update_time}
        metrics = log_step(setup, state, rollout, scored, estimate, stats, timings, step_started)
        state.step = step + 1
        if frontier.due(step + 1, cfg.frontier_every, total_steps):
            # In the step's own row, written before its checkpoint: a resumed run keeps it and never repeats it.
            metrics.update(frontier_point())
        tracker.log(metrics, step=step + 1)
        if (step + 1) % cfg.log_samples_every == 0 or step == 0:
            tracker.log_samples(_samples(scored.prompt_texts, scored.response_texts, scored.term_scores), step=step + 1)
        progress(step, metrics)
        if (t.save_steps and (step + 1) % t.save_steps == 0) or step + 1 == total_steps:
            save_checkpoint(step + 1)

    # ---- Save, then evaluate the saved policy against the reference on held-out prompts.
    final_dir = output_dir / FINAL
    _save_policy(accelerator, model, tokenizer, final_dir, full_state_dict(accelerator, model))
    episodes = total_steps * per_rank * setup.group_size * world
    results = {"steps": total_steps, "episodes": episodes, **_trend(state.history), **launch}
    if eval_prompts:
        unwrapped = unwrap(accelerator, model)
        # Everything generates here (policy and reference): gather both once rather than per layer and token.
        with gathered_weights(accelerator, model, unwrapped.policy), gathered_weights(accelerator, ref_policy):
            results.update(
                evaluate_against_reference(
                    unwrapped.policy, ref_policy, tokenizer, terms, eval_prompts, cfg, accelerator, eval_infos
                )
            )
        closing = {f"eval/{k}": v for k, v in results.items() if isinstance(v, int | float)}
        if cfg.frontier_every is not None:  # the frontier's last point: the same evaluation, already done
            closing.update(frontier.point(results, terms))
        tracker.log(closing, step=total_steps)
    tracker.close()
    if accelerator.is_main_process:
        write_manifest(
            output_dir,
            cfg,
            data=data_hashes(cfg.data.train, cfg.data.eval),
            parents=parents,
            results=results,
            started=started,
        )
        logger.info(
            "ppo finished: reward %.3f -> %.3f; final policy in %s",
            results["reward_first_10pct"],
            results["reward_last_10pct"],
            final_dir,
        )
    accelerator.wait_for_everyone()
    return output_dir


# ---- The phases of one step.


def collect_rollout(setup: Setup, state: PPOState, step: int) -> Rollout:
    """Rollout: samples `samples_per_prompt` responses for each of this rank's prompts of the step.

    A prompt's responses sit in consecutive rows (the layout `rlhf.ppo.advantages` expects of a group); each row is
    sampled with this rank's generator, so they differ.
    """
    from rlhf.distributed import all_ranks_done, gathered_weights

    cfg, accelerator = setup.cfg, setup.accelerator
    tokenizer, device = setup.tokenizer, accelerator.device
    prompts = _batch_indices(
        step,
        len(setup.prompts),
        cfg.training.batch_size,
        accelerator.num_processes,
        accelerator.process_index,
        cfg.seed,
    )
    index = [i for i in prompts for _ in range(setup.group_size)]
    query, query_mask = left_pad([setup.encoded[i] for i in index], tokenizer.pad_token_id)
    query, query_mask = query.to(device), query_mask.to(device)
    unwrapped = unwrap(accelerator, state.model)
    # ZeRO-3: gather once, not per decoding step. Under mixed precision the sampler's products run in bf16 too.
    with gathered_weights(accelerator, state.model, unwrapped.policy), accelerator.autocast():
        sampled = sample(
            unwrapped.policy,
            query,
            query_mask,
            max_new_tokens=cfg.rollout.max_new_tokens,
            temperature=cfg.rollout.temperature,
            top_k=cfg.rollout.top_k,
            top_p=cfg.rollout.top_p,
            eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id,
            generator=state.generator,
            all_done=all_ranks_done(accelerator),
            decoder=cfg.rollout.decoder,
            stats=True,
        )
    mask, has_eos = response_mask(sampled.tokens, tokenizer.eos_token_id)
    batch = Batch(query, query_mask, sampled.tokens, mask.to(device), has_eos)
    logprobs = sampled.logprobs.to(device)
    return Rollout(index, batch, logprobs, F.masked_mean(sampled.entropy.to(device), batch.response_mask))


def score(setup: Setup, state: PPOState, rollout: Rollout) -> Scored:
    """Score: every reward term, the reference log-probabilities and (gae) the values of the rollout.

    The old log-probs are the sampler's own where its numerics are the trainer's (fp32: the same weights and the
    same distribution as a fresh policy forward over prompt + response; tests check they agree), so that pass is not
    repeated. With `setup.recompute_logprobs` (bf16, mixed precision) they come from the training forward instead,
    sharing its pass with the values, so that the first update's ratio is exactly 1.
    """
    cfg, accelerator, u = setup.cfg, setup.accelerator, setup.cfg.update
    device, batch = accelerator.device, rollout.batch
    input_ids, attention_mask, position_ids = batch.sequence()
    length = batch.response.shape[1]
    unwrapped = unwrap(accelerator, state.model)
    values, old_logprobs = None, rollout.logprobs
    # `state.model`'s forward is under autocast already (Accelerate wraps it); the frozen models and the reward terms
    # run inside `accelerator.autocast()` (a no-op without mixed precision).
    with torch.no_grad(), accelerator.autocast():
        if unwrapped.has_value or setup.recompute_logprobs:
            logits, values = state.model(
                input_ids, attention_mask, position_ids, length, logits=setup.recompute_logprobs
            )
            if logits is not None:
                old_logprobs = F.logprobs_from_logits(logits, batch.response, cfg.rollout.temperature)
                old_logprobs = old_logprobs * batch.response_mask  # padding keeps the sampler's zeros
        ref_logprobs = _ref_logprobs(
            setup.ref_policy,
            unwrapped.policy,
            input_ids,
            attention_mask,
            position_ids,
            length,
            cfg.rollout.temperature,
            batch.response,
        )
    prompt_texts = [last_user_message(setup.prompts[i]) for i in rollout.index]
    response_texts = setup.tokenizer.batch_decode(batch.response, skip_special_tokens=True)
    step_info = [setup.infos[i] for i in rollout.index]
    with accelerator.autocast():
        term_scores = {
            term.name: term.score(batch, prompt_texts, response_texts, setup.tokenizer, step_info).to(device).float()
            for term in setup.terms
        }
    scores = sum(term.weight * term_scores[term.name] for term in setup.terms)
    raw_total = scores.clone()
    if cfg.rollout.missing_eos_penalty is not None:
        scores = F.missing_eos_penalty(scores, batch.has_eos.to(device), cfg.rollout.missing_eos_penalty)
    if u.reward_normalization:
        state.moments.update(accelerator.gather(scores))
        scores = scores / state.moments.std
    if u.reward_clip is not None:
        scores = scores.clamp(-u.reward_clip, u.reward_clip)
    _check_finite("reward", scores)
    return Scored(prompt_texts, response_texts, term_scores, raw_total, scores, ref_logprobs, values, old_logprobs)


def estimate_advantages(setup: Setup, state: PPOState, rollout: Rollout, scored: Scored) -> Estimate:
    """Advantages: the KL to the reference, then the estimator the recipe names (`advantage.estimator`).

    With `kl.mode: reward` the KL penalty is part of the reward each estimator sees (per token for gae and
    reinforce_pp, summed per response for grpo and rloo); with `kl.mode: loss` the reward is the score alone and
    `update_policy` adds the KL term to the loss.
    """
    cfg, mask = setup.cfg, rollout.batch.response_mask
    u, estimator = cfg.update, cfg.advantage.estimator
    beta = state.kl_ctl.value if cfg.kl.mode == "reward" else 0.0
    rewards, kl = F.kl_penalized_rewards(
        scored.scores, scored.old_logprobs, scored.ref_logprobs, mask, beta, cfg.kl.estimator
    )
    if estimator in A.GROUP_BASELINES:
        sequence = A.sequence_rewards(scored.scores, kl, mask, beta)
        baseline = A.grpo_advantages if estimator == "grpo" else A.rloo_advantages
        return Estimate(A.to_tokens(baseline(sequence, setup.group_size), mask), None, kl)
    if estimator == "reinforce_pp":
        moments = functools.partial(_global_moments, accelerator=setup.accelerator)
        advantages, _ = A.reinforce_pp_advantages(rewards, mask, u.gamma, moments=moments)
        return Estimate(advantages, None, kl)
    advantages, returns = F.gae_advantages(rewards, scored.values, mask, u.gamma, u.lam)
    if u.whiten_advantages:
        mean, var = _global_moments(advantages, mask, setup.accelerator)
        advantages = F.masked_whiten(advantages, mask, mean=mean, var=var)
    return Estimate(advantages, returns, kl)


def update_policy(
    setup: Setup, state: PPOState, rollout: Rollout, scored: Scored, estimate: Estimate
) -> dict[str, list[float]]:
    """Update: `update.epochs` passes of minibatches of whole prompt groups, each split into micro-batches.

    Within a minibatch the rows go to micro-batches by length (`_by_length`), and each micro-batch is computed at
    its own width (`Batch.trim` and `Batch.right_aligned` in `micro_batch_loss`), so short rows are not padded to
    the step's longest prompt and response. The minibatch's gradient is the same whatever the split (the loss is
    normalised by the minibatch's token count), so this changes nothing but float rounding and the statistics
    that are means over micro-batches.

    Returns each minibatch statistic's values, to be averaged for the log.
    """
    cfg, accelerator = setup.cfg, setup.accelerator
    t, u, model, batch = cfg.training, cfg.update, state.model, rollout.batch
    micro, accumulation = _micro_batch(cfg), t.gradient_accumulation_steps
    stats: dict[str, list[float]] = {}
    model.train()
    for _ in range(u.epochs):
        order = _group_order(cfg.training.batch_size, setup.group_size, state.generator).to(accelerator.device)
        for start in range(0, len(order), micro):
            if start % (micro * accumulation) == 0:
                minibatch = order[start : start + micro * accumulation]
                token_count = batch.response_mask[minibatch].sum().clamp(min=1)
                bucketed = _by_length(batch, minibatch)
            offset = start % (micro * accumulation)
            rows = bucketed[offset : offset + micro]
            with accelerator.accumulate(model):
                loss, step_stats = micro_batch_loss(
                    cfg, model, rollout, scored, estimate, rows, state.kl_ctl.value, token_count
                )
                _check_finite("loss", loss)
                accelerator.backward(loss)
                if accelerator.sync_gradients and t.max_grad_norm is not None:
                    step_stats.update(clip_gradients(accelerator, state.optimizer, t.max_grad_norm))
                state.optimizer.step()  # a no-op on accumulation micro-steps (Accelerate tracks the boundary)
                if accelerator.sync_gradients:
                    state.scheduler.step()
                state.optimizer.zero_grad()
            for key, value in step_stats.items():
                stats.setdefault(key, []).append(float(value.detach()))
    model.eval()
    return stats


def micro_batch_loss(
    cfg: PPOStage,
    model,
    rollout: Rollout,
    scored: Scored,
    estimate: Estimate,
    rows: torch.Tensor,
    kl_coef: float,
    token_count: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one micro-batch (`rows` of the rollout) and its statistics.

    The forward runs at the rows' own width: no column that is padding in every row (`Batch.trim`, which also
    slices the step-width per-token tensors to the kept response columns), and each row's prompt and response
    together at the right end (`Batch.right_aligned`), so the width is the longest row, not the longest prompt plus
    the longest response.

    Every token term is summed over the micro-batch and divided by `token_count`, the real tokens of the whole
    minibatch, then multiplied by `training.gradient_accumulation_steps` because Accelerate (and DeepSpeed) divide
    each micro-batch's loss by it in `backward`: the accumulated gradient is then the token mean over the minibatch,
    whatever the split (a mean of per-micro-batch means weights the tokens of short micro-batches more).
    """
    part, columns = rollout.batch.select(rows).trim()
    ids, att, pos, shift = part.right_aligned()
    length = part.response.shape[1]
    new_logits, new_values = model(ids, att, pos, length)
    # The forward sees each row's response at the right end (moved right by `shift`): take the log-probs of the
    # tokens where they are, then read each row's response back to the left-aligned columns the rollout's tensors
    # use (columns past a row's response read a clamped index and are masked out).
    new_logprobs = F.logprobs_from_logits(new_logits, ids[:, -length:], cfg.rollout.temperature)
    aligned = (torch.arange(length, device=shift.device)[None, :] + shift[:, None]).clamp(max=length - 1)
    new_logprobs = new_logprobs.gather(1, aligned)
    new_values = new_values.gather(1, aligned) if new_values is not None else None
    mask, count = part.response_mask, token_count / cfg.training.gradient_accumulation_steps
    pg_loss, pg_stats = F.policy_loss(
        new_logprobs,
        scored.old_logprobs[rows, columns],
        estimate.advantages[rows, columns],
        mask,
        cfg.update.cliprange,
        count,
    )
    loss = pg_loss
    step_stats = {
        "loss/policy": pg_loss,
        "policy/clipfrac": pg_stats["clipfrac"],
        "policy/approx_kl": pg_stats["approx_kl"],
    }
    if new_values is not None:
        vf_loss, vf_stats = F.value_loss(
            new_values, scored.values[rows, columns], estimate.returns[rows, columns], mask, cfg.value.cliprange, count
        )
        loss = loss + cfg.value.coef * vf_loss
        step_stats.update({"loss/value": vf_loss, "value/clipfrac": vf_stats["clipfrac"]})
    if cfg.kl.mode == "loss":
        kl_loss = A.kl_loss(new_logprobs, scored.ref_logprobs[rows, columns], mask, cfg.kl.estimator, count)
        loss = loss + kl_coef * kl_loss
        step_stats["loss/kl"] = kl_loss
    return loss, step_stats


def clip_gradients(accelerator, optimizer, max_norm: float) -> dict[str, torch.Tensor]:
    """Clips the joint gradient norm of policy and value function to `max_norm`; returns each group's norm before it.

    Issue 15 allows separate clipping or separately reported norms. Separate clipping was measured (one seed each):
    it changed the shipped default's learning (content judge -0.009 [-0.039, +0.023] with the joint clip,
    -0.033 [-0.067, -0.000] and an alarm with separate clips) and the end-to-end ppo test's reward gain fell below its
    bar, so the clip stays joint and the norms of the "policy" and "value" groups (`ActorCritic.param_groups`) are
    reported apart: a large `grad_norm/value` against a small `grad_norm/policy` shows when the critic's gradient is
    what the clip shrinks. Under DeepSpeed the engine clips (its `gradient_clipping`) and reports the joint norm only.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        norm = accelerator.clip_grad_norm_(None, max_norm)
        return {} if norm is None else {"grad_norm": torch.as_tensor(norm, dtype=torch.float32)}
    norms = {
        f"grad_norm/{group['name']}": torch.linalg.vector_norm(
            torch.stack(
                [p.grad.detach().float().norm() for p in group["params"] if p.grad is not None] or [torch.zeros(())]
            )
        )
        for group in optimizer.param_groups
    }
    all_params = [p for group in optimizer.param_groups for p in group["params"]]
    norms["grad_norm"] = torch.as_tensor(accelerator.clip_grad_norm_(all_params, max_norm), dtype=torch.float32)
    return norms


def log_step(
    setup: Setup,
    state: PPOState,
    rollout: Rollout,
    scored: Scored,
    estimate: Estimate,
    stats: dict[str, list[float]],
    timings: dict[str, float],
    step_started: float,
) -> dict[str, float]:
    """Log: the step's metrics, reduced over ranks; moves the KL controller and the reward history."""
    cfg, accelerator, batch = setup.cfg, setup.accelerator, rollout.batch
    device, step = accelerator.device, state.step

    def reduce_mean(value: torch.Tensor) -> float:
        return accelerator.reduce(value.detach().float().to(device), reduction="mean").item()

    kl_per_sequence = F.masked_sum(estimate.kl, batch.response_mask, dim=1)
    mean_kl = reduce_mean(kl_per_sequence.mean())
    state.kl_ctl.update(mean_kl, batch.response.shape[0] * accelerator.num_processes)
    kl_alarm = cfg.kl.alarm is not None and mean_kl > cfg.kl.alarm
    if kl_alarm:
        logger.error(
            "ppo step %d: mean KL per sequence %.2f exceeds kl.alarm=%.2f: the policy is drifting far "
            "from the reference (raise kl.coef, lower training.learning_rate, or use kl.adaptive)",
            step + 1,
            mean_kl,
            cfg.kl.alarm,
        )
    lengths = batch.response_mask.sum(1)
    step_time = time.perf_counter() - step_started
    generated = accelerator.reduce(lengths.sum().to(device), reduction="sum").item()
    metrics = {
        "reward/total": reduce_mean(scored.raw_total.mean()),
        "reward/score": reduce_mean(scored.scores.mean()),
        **{f"reward/{name}": reduce_mean(value.mean()) for name, value in scored.term_scores.items()},
        "kl": mean_kl,
        "kl_coef": state.kl_ctl.value,
        "kl_alarm": float(kl_alarm),
        "entropy": reduce_mean(rollout.entropy),
        "response/length": reduce_mean(lengths.float().mean()),
        "response/eos_rate": reduce_mean(batch.has_eos.float().mean()),
        "lr": state.scheduler.get_last_lr()[0],
        **{f"time/{phase}": seconds for phase, seconds in timings.items()},
        "time/step": step_time,
        "tokens_per_s": generated / step_time,
        **{key: sum(values) / len(values) for key, values in stats.items()},
    }
    if setup.recompute_logprobs:
        # How far the sampler's numerics are from the trainer's, per real token, before any update.
        gap = (rollout.logprobs - scored.old_logprobs).abs()
        metrics["rollout/logprob_gap_mean"] = reduce_mean(F.masked_mean(gap, batch.response_mask))
        worst = gap.masked_fill(batch.response_mask == 0, 0).max().to(device)
        metrics["rollout/logprob_gap_max"] = accelerator.gather(worst.reshape(1)).max().item()
    if estimate.returns is not None:
        metrics["value/explained_variance"] = reduce_mean(
            F.explained_variance(scored.values, estimate.returns, batch.response_mask)
        )
    state.history.append(metrics["reward/total"])
    return metrics


def _value_model(cfg: PPOStage, policy, parents: dict) -> dict:
    """ActorCritic's value arguments: a critic loaded from `value.init` (or the reward model), a head size, or
    nothing at all for an estimator that needs no critic."""
    if cfg.advantage.estimator in A.CRITIC_FREE:
        return {}
    if cfg.value.mode == "head":
        return {"hidden_size": policy.config.hidden_size}
    from transformers import AutoModelForSequenceClassification

    init = cfg.value.init or next((s.model for s in cfg.rewards if s.model is not None), None)
    if init is None:
        raise ValueError("ppo: value.mode 'critic' needs value.init or a learned reward source to start from")
    parents["value"] = check_parent(init)
    if is_implicit(init) and (Path(init) / "adapter_config.json").is_file():
        raise ValueError(
            f"ppo: the critic starts from {init}, an implicit reward model that is a LoRA adapter: set value.init to "
            "a model with full weights, e.g. the sft model"
        )
    # A classifier reward model brings its trained head; an implicit one (a causal LM) its body, with a new head.
    critic = AutoModelForSequenceClassification.from_pretrained(
        init, num_labels=1, trust_remote_code=cfg.model.trust_remote_code
    )
    return {"critic": critic}


def _micro_batch(cfg: PPOStage) -> int:
    """Rows per forward/backward pass: a minibatch of whole prompt groups, split for gradient accumulation."""
    prompts_per_minibatch = cfg.training.batch_size // cfg.update.num_minibatches
    return prompts_per_minibatch * cfg.rollout.samples_per_prompt // cfg.training.gradient_accumulation_steps


def _by_length(batch: Batch, rows: torch.Tensor) -> torch.Tensor:
    """`rows` (one minibatch) sorted by real length, prompt plus response, so that consecutive micro-batches hold
    rows of similar length and little padding (`micro_batch_loss` computes each at its longest row's width).
    A stable sort: the same rows in the same order give the same micro-batches (resuming stays exact)."""
    lengths = batch.query_mask[rows].sum(1) + batch.response_mask[rows].sum(1).long()
    return rows[torch.sort(lengths, stable=True).indices]


def _group_order(prompts: int, group_size: int, generator: torch.Generator) -> torch.Tensor:
    """A random order of this rank's rows that moves prompt groups whole (row ``g * k + j`` is response j of g).

    With one response per prompt this is the plain ``randperm`` of the rows.
    """
    groups = torch.randperm(prompts, generator=generator)
    return (groups.unsqueeze(1) * group_size + torch.arange(group_size)).reshape(-1)


def _batch_indices(step: int, n: int, per_rank: int, world: int, rank: int, seed: int) -> list[int]:
    """This rank's prompt indices for a step: a fresh seeded permutation per epoch, derived from the step alone.

    Deriving the order from the step number (not from consumed iterator state) makes resuming exact.
    """
    global_batch = per_rank * world
    per_epoch = n // global_batch
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    start = position * global_batch + rank * per_rank
    return order[start : start + per_rank].tolist()


def _recompute_logprobs(setting: str, dtype: str, accelerator) -> bool:
    """Whether the old log-probs come from a training forward: `rollout.recompute_logprobs`, with 'auto' resolved.

    'auto' is on where sampler and trainer round differently: half-precision weights (the KV-cache decoder and the
    full-sequence forward accumulate in another order) or a mixed-precision launch (the trainer runs under autocast,
    the sampler does not).
    """
    if setting != "auto":
        return setting == "always"
    on = dtype != "float32" or accelerator.mixed_precision != "no"
    logger.info(
        "ppo: old log-probs from %s (rollout.recompute_logprobs=auto, dtype %s, mixed precision %s)",
        "a training forward" if on else "the sampler",
        dtype,
        accelerator.mixed_precision,
    )
    return on


def _ref_logprobs(ref_policy, policy, input_ids, attention_mask, position_ids, length, temperature, response):
    """Reference log-probs: the frozen copy, or the policy with its LoRA adapter disabled."""
    if ref_policy is not None:
        logits = response_logits(ref_policy, input_ids, attention_mask, position_ids, length)
    else:
        with policy.disable_adapter():
            logits = response_logits(policy, input_ids, attention_mask, position_ids, length)
    return F.logprobs_from_logits(logits, response, temperature)


def _global_moments(x: torch.Tensor, mask: torch.Tensor, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) variance of x over the real tokens of every rank."""
    local = torch.stack([F.masked_sum(x, mask), F.masked_sum(x * x, mask), mask.sum().to(x.dtype)])
    total, total_sq, count = accelerator.reduce(local, reduction="sum")
    mean = total / count.clamp(min=1)
    var = (total_sq - count * mean**2) / (count - 1).clamp(min=1)
    return mean, var.clamp(min=0)


def _check_finite(what: str, value: torch.Tensor) -> None:
    if not torch.isfinite(value).all():
        raise NonFiniteError(f"ppo: non-finite {what} ({value.flatten()[:4].tolist()}); stopping before it is used")


def _trend(history: list[float]) -> dict[str, float]:
    """Mean total reward of the first and last 10% of steps."""
    k = max(1, math.ceil(len(history) / 10))
    return {"reward_first_10pct": sum(history[:k]) / k, "reward_last_10pct": sum(history[-k:]) / k}


def _samples(prompts: list[str], responses: list[str], scores: dict[str, torch.Tensor], n: int = 4) -> list[dict]:
    return [
        {
            "prompt": prompts[i],
            "response": responses[i],
            **{name: round(float(value[i]), 3) for name, value in scores.items()},
        }
        for i in range(min(n, len(prompts)))
    ]


def _progress(total: int, enabled: bool):
    """A progress bar on a terminal, plain log lines otherwise."""
    from rlhf.tracking import interactive

    if enabled and interactive():
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="ppo")

        def update(step: int, metrics: dict) -> None:
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward/total']:.3f}", kl=f"{metrics['kl']:.3f}")
            if step + 1 == total:
                bar.close()

        return update

    def log_line(step: int, metrics: dict) -> None:
        if enabled:
            logger.info(
                "ppo step %d/%d: reward %.3f, kl %.3f, kl_coef %.3f, length %.1f, eos %.2f, %.1f tok/s",
                step + 1,
                total,
                metrics["reward/total"],
                metrics["kl"],
                metrics["kl_coef"],
                metrics["response/length"],
                metrics["response/eos_rate"],
                metrics["tokens_per_s"],
            )

    return log_line


def _save_policy(accelerator, model, tokenizer, final_dir: Path, state_dict: dict | None) -> None:
    """Saves the policy (merged weights, or the PEFT adapter) with its tokenizer so `from_pretrained` loads it.

    `state_dict` is the whole actor-critic's, gathered onto the main process (under ZeRO-3 the module itself holds
    only this rank's shards, so the adapter too is saved from the gathered weights).
    """
    if accelerator.is_main_process:
        policy = unwrap(accelerator, model).policy
        prefix = "policy."
        policy_state = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        final_dir.mkdir(parents=True, exist_ok=True)
        policy.save_pretrained(final_dir, state_dict=policy_state, safe_serialization=True)
        tokenizer.padding_side = "right"
        tokenizer.save_pretrained(final_dir)
    accelerator.wait_for_everyone()
