"""Benchmarks: our ppo, sft and reward stages at fixed settings, against TRL 1.10's PPOTrainer on the same machine.

`scripts/bench.py` is the command line. The measuring code lives here:

* `flops`: model FLOP estimates, with the per-token formula of the reference script (`trl_ppo_baseline.py`).
* `probe`: what one process measures about the machine (fp32 matmul ceiling, peak RSS, versions, load, commit).
* `models`: the model directories both sides run (our embedded models, plus a reward model of the same size).
* `instrument`: counts and times every forward pass of a stage run (which model, which phase, which shapes).
* `workloads`: the ppo, sft and reward workloads, each measured in its own process.
* `baseline`: runs the TRL reference and compares, alternating runs so that machine drift cancels.
* `profile`: where the time of a ppo run goes (py-spy when installed, cProfile otherwise).
* `results`: the result record and `bench/results.jsonl`.
* `throughput`: one policy's generation (ours and HF `generate`) and PPO update on CPU or CUDA, random-weight models
  of Qwen2-0.5B / 1.5B shape: tokens/s, MFU, peak memory.
* `devices`: the `--device` option and the GPU peak table MFU is measured against.
* `summary`: one `name value` line per number of a record (what scripts/gpu_check.sh prints).
"""
