"""Paired, interleaved timing: the ratio's interval, and the flags that say when not to trust it."""

from __future__ import annotations

import time

import pytest

from compression_core.analysis import judge, machine_info, median_interval, time_paired


def _sleeper(seconds: float):
    return lambda: time.sleep(seconds)


def test_median_interval_is_the_binomial_order_statistics():
    assert median_interval(list(range(1, 11))) == (2, 9)  # P(B(10, 1/2) < 2) = 1.1% <= 2.5% < P(B < 3)
    assert median_interval([5, 1, 4, 2, 3, 6]) == (1, 6)  # 6 values: the whole range is a 96.9% interval
    assert median_interval([3.0, 1.0]) == (1.0, 3.0)  # too few for 95%: everything
    values = list(range(100))
    low, high = median_interval(values)
    assert (low, high) == (39, 60) and median_interval(values) == (low, high)  # deterministic
    with pytest.raises(ValueError):
        median_interval([])


def test_a_runner_twice_as_slow_gives_a_ratio_near_two_with_a_tight_interval():
    timing = time_paired(_sleeper(0.020), _sleeper(0.010), min_rounds=8, budget_s=1.0, min_sample_s=0.0)
    assert timing.ratio == pytest.approx(2.0, rel=0.2)
    assert timing.low <= timing.ratio <= timing.high and timing.high / timing.low < 1.25
    assert timing.before.rounds == timing.after.rounds >= 8
    assert timing.before.median_ms == pytest.approx(20.0, rel=0.3) and timing.after.median_ms < timing.before.median_ms
    assert timing.before.p10_ms <= timing.before.median_ms <= timing.before.p90_ms
    assert judge(timing)["verdict"] in ("faster", "noisy")  # noisy only if the machine was busy, never red
    assert "regression" not in judge(timing)["flags"]


def test_equal_runners_give_an_interval_containing_one():
    # A 95% interval misses the true ratio in 5% of runs by design: two of three runs must contain 1.
    same = _sleeper(0.003)
    contained = []
    for _ in range(3):
        timing = time_paired(same, same, min_rounds=12, budget_s=0.4, min_sample_s=0.0)
        contained.append(timing.low <= 1.0 <= timing.high)
    assert sum(contained) >= 2


def test_a_slowdown_in_half_the_rounds_of_one_runner_is_flagged_noisy():
    calls = {"n": 0}

    def sometimes_slow():
        calls["n"] += 1
        time.sleep(0.012 if calls["n"] % 2 else 0.003)

    # Paired ratios of 2 in half the rounds and 0.5 in the other half: no single ratio can be claimed.
    timing = time_paired(_sleeper(0.006), sometimes_slow, min_rounds=16, max_rounds=16, budget_s=1.0,
                         min_sample_s=0.0)
    assert timing.high / timing.low > 1.25
    verdict = judge(timing)
    assert verdict["flags"] == ["noisy"] and verdict["verdict"] == "noisy"
    assert any("interval of the ratio is wide" in note for note in verdict["notes"])


def test_a_slower_compressed_model_is_a_regression():
    timing = time_paired(_sleeper(0.005), _sleeper(0.010), min_rounds=8, budget_s=1.0, min_sample_s=0.0)
    verdict = judge(timing)
    assert timing.high < 1.0
    assert "regression" in verdict["flags"] and verdict["verdict"] == "regression"
    assert any("slower" in note for note in verdict["notes"])


def test_a_speedup_beyond_what_the_macs_allow_is_implausible():
    timing = time_paired(_sleeper(0.020), _sleeper(0.010), min_rounds=8, budget_s=1.0, min_sample_s=0.0)
    verdict = judge(timing, plausible_max=1.2, plausible_reason="its MACs went down 0.8x")
    assert "implausible" in verdict["flags"] and verdict["verdict"] == "implausible"
    assert any("its MACs went down 0.8x" in note for note in verdict["notes"])
    assert "implausible" not in judge(timing, plausible_max=3.0)["flags"]


def test_tiny_calls_are_repeated_inside_one_sample():
    timing = time_paired(lambda: None, lambda: None, min_rounds=6, budget_s=0.1, min_sample_s=0.001)
    assert timing.before.repeats > 3 and timing.before.chunks > 3 and timing.after.chunks > 3


def test_the_machine_is_described():
    info = machine_info(threads=1)
    assert info["threads"] == 1 and 1 <= info["available_cores"] <= info["logical_cores"]
    assert info["cpu"] and info["torch"] and info["load_start"] >= 0
    assert set(info) == {"cpu", "logical_cores", "available_cores", "threads", "torch", "onnxruntime", "gpu",
                         "load_start", "load_end"}
