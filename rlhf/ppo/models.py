"""The ppo models: `policy` and `value` trained together as one module; `ref_policy` frozen.

`ActorCritic` holds the policy and, for GAE, either a separate critic (a sequence classifier, usually initialised from the
reward model: independent features, one more model in memory and one more forward pass) or a scalar value head on
the policy's own trunk (one forward pass serves both, no second model, but policy and value losses share features).
Holding both in one module gives one optimiser, one DeepSpeed engine and one checkpoint. The critic-free estimators
(grpo, rloo, reinforce_pp) hold the policy alone: no value weights are built, loaded or saved.
"""

from __future__ import annotations

import torch
from torch import nn


def base_model_of(model: nn.Module) -> nn.Module:
    """The `transformers` model inside a PEFT wrapper (the model itself when it is not wrapped)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def trunk_of(model: nn.Module) -> nn.Module:
    """The transformer body (no output head) of a causal LM or sequence classifier, looking through PEFT."""
    base = base_model_of(model)
    return getattr(base, base.base_model_prefix)


def lm_head_of(model: nn.Module) -> nn.Module:
    """The output projection of a causal LM, looking through PEFT."""
    return base_model_of(model).get_output_embeddings()


def disable_dropout(model: nn.Module) -> None:
    """Sets every dropout probability to 0, so the PPO ratio compares the same function before and after."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


class ActorCritic(nn.Module):
    """Policy plus value function; `forward` returns response-position logits and values.

    Args:
        policy: The causal LM being optimised (possibly a PEFT model).
        critic: A sequence-classification model whose score head is applied at every position (critic mode).
        hidden_size: Hidden size of the policy trunk, for the value head (head mode, when `critic` is None).
            With neither `critic` nor `hidden_size` there is no value function (critic-free estimators).
    """

    def __init__(self, policy: nn.Module, critic: nn.Module | None = None, hidden_size: int | None = None):
        super().__init__()
        self.policy = policy
        self.critic = critic
        self.value_head = None
        if critic is None and hidden_size is not None:
            self.value_head = nn.Linear(hidden_size, 1)
            # A small random head: values start near zero and the value loss does not swamp early policy updates.
            nn.init.normal_(self.value_head.weight, std=1.0 / (hidden_size + 1))
            nn.init.zeros_(self.value_head.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        response_length: int,
        logits: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Logits [B, R, V] predicting each response token and values [B, R] of the state before it.

        Only the R positions that predict response tokens go through the output head (prompt logits are never
        computed). `logits=False` computes values alone (None for logits): no policy pass in critic mode, no output
        head in head mode. Without a value function the values are None.
        """
        if not self.has_value:
            logits_out = response_logits(self.policy, input_ids, attention_mask, position_ids, response_length)
            return (logits_out if logits else None), None
        window = slice(-response_length - 1, -1)
        if self.value_head is not None:
            hidden = trunk_of(self.policy)(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
            ).last_hidden_state[:, window]
            values = self.value_head(hidden).squeeze(-1)
            return (lm_head_of(self.policy)(hidden) if logits else None), values
        hidden = trunk_of(self.critic)(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state[:, window]
        values = self.critic.score(hidden).squeeze(-1)
        if not logits:
            return None, values
        policy_logits = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            logits_to_keep=response_length + 1,
        ).logits[:, :-1]
        return policy_logits, values

    @property
    def has_value(self) -> bool:
        """Whether there is a value function (critic or head)."""
        return self.critic is not None or self.value_head is not None

    def param_groups(self, learning_rate: float, value_learning_rate: float, weight_decay: float) -> list[dict]:
        """Optimiser parameter groups: policy weights and value weights (critic or head) at their own rates."""
        policy_params = [p for p in self.policy.parameters() if p.requires_grad]
        groups = [{"params": policy_params, "lr": learning_rate, "weight_decay": weight_decay, "name": "policy"}]
        if self.has_value:
            value_module = self.critic if self.critic is not None else self.value_head
            value_params = [p for p in value_module.parameters() if p.requires_grad]
            groups.append(
                {"params": value_params, "lr": value_learning_rate, "weight_decay": weight_decay, "name": "value"}
            )
        return groups


def response_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    response_length: int,
) -> torch.Tensor:
    """Logits [B, R, V] of a causal LM at the positions that predict the response tokens."""
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        logits_to_keep=response_length + 1,
    ).logits[:, :-1]


def count_base_parameters(model: nn.Module) -> int:
    """Number of parameter elements that are not LoRA adapter weights (shared tensors counted once)."""
    seen, total = set(), 0
    for name, param in model.named_parameters():
        if "lora_" in name or id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
    return total
