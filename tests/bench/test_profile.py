"""Reading sampled stacks: each sample lands in the loop phase of the line of ppo.run it is under."""

from rlhf.bench.profile import phase_boundaries, summarize_stacks

SOURCE = """def run(cfg):
    setup()
    for step in range(first_step, total_steps):
        step_started = time.perf_counter()
        sample()
        score_started = time.perf_counter()
        score()
        update_started = time.perf_counter()
        update()
        update_time = time.perf_counter() - update_started
        log()
    final_dir = output_dir / FINAL
    save()
"""


def test_phases_follow_the_timing_statements(tmp_path):
    source = tmp_path / "ppo.py"
    source.write_text(SOURCE)
    assert phase_boundaries(source) == [
        (0, "setup"),
        (3, "rollout"),
        (6, "score"),
        (8, "update"),
        (11, "log"),
        (12, "save"),
    ]
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "<module> (bench.py:1);run (rlhf/stages/ppo.py:5);sample (rlhf/generation/sampling.py:9);forward (linear.py:3) 6\n"
        "<module> (bench.py:1);run (rlhf/stages/ppo.py:5);sample (rlhf/generation/sampling.py:12) 2\n"
        "<module> (bench.py:1);run (/x/rlhf/stages/ppo.py:9);backward (torch/_tensor.py:1) 2\n"
        "<module> (bench.py:1);matmul_ceiling (rlhf/bench/probe.py:3) 2\n"
    )
    summary = summarize_stacks(raw, source)
    assert summary["rollout"]["share"] == round(8 / 12, 4)
    assert summary["rollout"]["top_self"][0] == ("forward (linear.py)", 0.75)
    assert ("sample (rlhf/generation/sampling.py)", 1.0) in summary["rollout"]["top_inclusive"]
    assert summary["update"]["samples"] == 2
    assert summary["outside run()"]["samples"] == 2


def test_an_unrecognised_loop_is_reported_whole(tmp_path):
    source = tmp_path / "ppo.py"
    source.write_text("def run(cfg):\n    pass\n")
    assert phase_boundaries(source) == [(0, "run")]
