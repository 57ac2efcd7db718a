"""Launched by test_ppo_distributed.py under `accelerate launch --config_file recipes/launch/zero3.yaml --num_processes 2`.

Sets up ppo's models the way `rlhf.stages.ppo` does (policy + value head in one DeepSpeed engine, ref_policy as a
sharded inference engine), then decodes greedily on this rank's own prompts three ways: with the policy's weights
gathered once (the ppo loop's path), layer by layer through ZeRO-3's hooks, and with ref_policy's engine. A plain,
unpartitioned copy of the same weights, loaded on this rank alone, decodes the same prompts as the reference. Writes
OUT_DIR/rank<N>.json with the token ids of each, plus logits of the engine's training forward against the plain model,
whether one optimiser step after gathering still ran and changed the weights, and the learning rate DeepSpeed's
optimiser sees after the loop's torch scheduler stepped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROMPTS = [
    "Where is my order? It has been two weeks.",
    "Can I return a tent I used once?",
    "My jacket zipper broke after a month.",
    "Do you ship to Canada?",
]


def main(out_dir: Path) -> None:
    from rlhf.distributed import make_accelerator, prepare_environment, shutdown

    prepare_environment()
    import deepspeed
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.distributed import (
        configure_deepspeed,
        gathered_weights,
        prepare_frozen,
        single_process_loading,
        zero_stage,
    )
    from rlhf.generation.sampling import encode_prompts, left_pad, sample
    from rlhf.models.loading import resolve_model_path
    from rlhf.ppo.models import ActorCritic

    accelerator = make_accelerator()
    rank = accelerator.process_index
    path = resolve_model_path("embedded:tiny")
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(path)  # partitioned while loading (zero3_init_flag)
    ref_policy = AutoModelForCausalLM.from_pretrained(path)
    actor_critic = ActorCritic(policy, hidden_size=policy.config.hidden_size)
    optimizer = torch.optim.AdamW(actor_critic.parameters(), lr=1e-2)
    # As in ppo: a plain torch scheduler on the raw optimiser, built before prepare and stepped by the loop.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    configure_deepspeed(accelerator, micro_batch_size=2, max_grad_norm=1.0)
    model, optimizer = accelerator.prepare(actor_critic, optimizer)
    scheduler.step()
    ref_policy = prepare_frozen(accelerator, ref_policy)
    with single_process_loading():
        plain = AutoModelForCausalLM.from_pretrained(path).eval()  # the whole model, on this rank only

    # Each rank its own prompts (of different lengths), as in the ppo loop.
    mine = PROMPTS[rank * 2 : rank * 2 + 2]
    encoded = encode_prompts(tokenizer, [[{"role": "user", "content": p}] for p in mine], 64)
    query, query_mask = left_pad(encoded, tokenizer.pad_token_id)

    def all_done(done: bool) -> bool:
        flag = torch.tensor([0.0 if done else 1.0])
        return accelerator.reduce(flag, reduction="sum").item() == 0

    settings = dict(
        max_new_tokens=12,
        temperature=0.0,
        top_k=0,
        top_p=1.0,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
        all_done=all_done,
    )
    unwrapped = accelerator.unwrap_model(model)
    model.eval()
    weight = unwrapped.policy.get_input_embeddings().weight
    record = {
        "rank": rank,
        "world_size": accelerator.num_processes,
        "zero_stage": zero_stage(accelerator),
        "scheduler_lr": scheduler.get_last_lr()[0],
        "engine_lr": model.get_lr()[0],
        "micro_batch": model.train_micro_batch_size_per_gpu(),
        "gradient_clipping": model.gradient_clipping(),
        "embedding_local_numel": weight.numel(),
        "embedding_shard_numel": weight.ds_tensor.numel(),
        "embedding_full_numel": weight.ds_numel,
    }
    with gathered_weights(accelerator, model, unwrapped.policy):
        record["gathered_numel_inside"] = weight.numel()
        record["gathered"] = sample(unwrapped.policy, query, query_mask, **settings).tolist()
    record["embedding_local_numel_after"] = weight.numel()
    record["hooks"] = sample(unwrapped.policy, query, query_mask, **settings).tolist()
    record["ref"] = sample(ref_policy, query, query_mask, **settings).tolist()
    with torch.no_grad():
        record["plain"] = sample(plain, query, query_mask, **{**settings, "all_done": None}).tolist()

    # The engine's own forward (hooks put back after gathering) gives the plain model's logits...
    response = torch.tensor(record["gathered"])
    ids = torch.cat([query, response], dim=1)
    mask = torch.cat([query_mask, torch.ones_like(response)], dim=1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits, _ = model(ids, mask, pos, response.shape[1])
        expected = plain(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -response.shape[1] - 1 : -1]
    record["logits_max_diff"] = (logits - expected).abs().max().item()
    # ...and training still works: one step moves the weights.
    with deepspeed.zero.GatheredParameters([weight]):
        before = weight.detach().clone()
    model.train()
    new_logits, values = model(ids, mask, pos, response.shape[1])
    accelerator.backward(new_logits.logsumexp(-1).mean() + values.pow(2).mean())
    with deepspeed.zero.GatheredParameters([weight]):
        record["step_changed_weights"] = not torch.equal(before, weight.detach())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(record))
    shutdown()  # as `rlhf run` ends a launch: a barrier, then the process group destroyed before exit


if __name__ == "__main__":
    main(Path(sys.argv[1]))
