"""Sampling responses from a causal LM: batched rollouts (`sampling`) and the lean KV-cache decoder (`decoding`).

Shared by the ppo stage (rollouts), the held-out evaluation (`rlhf.evaluation`) and the compare report.
"""
