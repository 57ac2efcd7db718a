"""The compare stage's entry point, where `rlhf.pipeline.run_stage` looks for every stage (`rlhf.stages.<name>`).

The stage is large enough to be a package of its own (generation and scoring, statistics, alarms, plots, report):
see `rlhf.compare`.
"""

from rlhf.compare.run import run

__all__ = ["run"]
