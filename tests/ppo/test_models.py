"""The ppo models: actor-critic outputs line up with the plain models; LoRA keeps one copy of the base weights."""

import pytest
import torch

from rlhf.generation.sampling import Batch, left_pad, response_mask
from rlhf.ppo.models import ActorCritic, count_base_parameters, response_logits


@pytest.fixture(scope="module")
def tiny_path():
    from rlhf.models.embedded import resolve_embedded

    return resolve_embedded("embedded:tiny")


def _batch(pad_id: int, eos_id: int) -> Batch:
    query, query_mask = left_pad([[5, 9, 30], [41]], pad_id)
    response = torch.tensor([[7, 8, eos_id, pad_id], [9, 10, 11, 12]])
    mask, has_eos = response_mask(response, eos_id)
    return Batch(query, query_mask, response, mask, has_eos)


def test_head_mode_logits_match_the_policy_and_values_have_response_shape(tiny_path):
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(tiny_path)
    model = ActorCritic(policy, hidden_size=policy.config.hidden_size)
    batch = _batch(policy.config.pad_token_id, policy.config.eos_token_id)
    ids, attention, pos = batch.sequence()
    logits, values = model(ids, attention, pos, response_length=4)
    assert values.shape == (2, 4)
    expected = policy(input_ids=ids, attention_mask=attention, position_ids=pos).logits[:, 2:-1]
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(response_logits(policy, ids, attention, pos, 4), expected)


def test_critic_mode_values_come_from_the_critic_score_head(tiny_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    policy = AutoModelForCausalLM.from_pretrained(tiny_path)
    critic = AutoModelForSequenceClassification.from_pretrained(tiny_path, num_labels=1)
    model = ActorCritic(policy, critic=critic)
    batch = _batch(policy.config.pad_token_id, policy.config.eos_token_id)
    ids, attention, pos = batch.sequence()
    _, values = model(ids, attention, pos, response_length=4)
    full = critic.score(critic.model(input_ids=ids, attention_mask=attention, position_ids=pos).last_hidden_state)
    torch.testing.assert_close(values, full.squeeze(-1)[:, 2:-1])
    names = {group["name"] for group in model.param_groups(1e-4, 1e-5, 0.0)}
    assert names == {"policy", "value"}


def test_lora_policy_with_value_head_holds_one_copy_of_the_base(tiny_path):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from rlhf.config import LoraConfig
    from rlhf.models.loading import peft_config

    base = AutoModelForCausalLM.from_pretrained(tiny_path)
    base_count = sum(p.numel() for p in base.parameters())
    reference = AutoModelForCausalLM.from_pretrained(tiny_path)
    policy = get_peft_model(base, peft_config(LoraConfig(r=4, alpha=8), "CAUSAL_LM"))
    model = ActorCritic(policy, hidden_size=base.config.hidden_size)
    head = sum(p.numel() for p in model.value_head.parameters())
    assert count_base_parameters(model) == base_count + head

    # The adapter changes the policy; with the adapter disabled it is exactly the reference model.
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    batch = _batch(base.config.pad_token_id, base.config.eos_token_id)
    ids, attention, pos = batch.sequence()
    expected = response_logits(reference, ids, attention, pos, 4)
    assert not torch.allclose(response_logits(policy, ids, attention, pos, 4), expected)
    with policy.disable_adapter():
        torch.testing.assert_close(response_logits(policy, ids, attention, pos, 4), expected)
