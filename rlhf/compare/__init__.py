"""The compare stage: base, sft, ppo and any other checkpoints side by side on held-out prompts.

`run` generates and scores; `stats` and `alarms` are pure functions; `report` writes the Markdown/HTML report.
Importing this package imports neither torch nor matplotlib.
"""
