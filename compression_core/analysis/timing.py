"""Paired latency: time two forward functions interleaved, and say how much the ratio can be trusted.

Two medians taken minutes apart compare the machine's load at two moments as
much as two models. :func:`time_paired` times ``before`` and ``after`` in
alternating order (A B, B A, ...) in the same process, so a slow spell of the
machine hits both; each round gives one paired ratio ``before / after``, and
the ratio reported is their median with a distribution-free 95% interval (order
statistics of the binomial, deterministic). It stops when the interval is tight
or the time budget is spent, never before ``min_rounds``. :func:`judge` turns a
timing into flags (``noisy``, ``implausible``, ``regression``) and a verdict.

Example::

    >>> import time
    >>> timing = time_paired(lambda: time.sleep(0.004), lambda: time.sleep(0.002), min_rounds=8, budget_s=0.3)
    >>> 1.6 < timing.ratio < 2.4, timing.before.rounds >= 8
    (True, True)
    >>> judge(timing)["verdict"]
    'faster'
"""

from __future__ import annotations

import glob
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

#: An interval whose high end is more than this times its low end is too wide to call a change.
NOISY_WIDTH = 1.25
#: Stop adding rounds once the interval is this tight (high / low).
TIGHT_WIDTH = 1.05
#: The timing threads waited for a core more than this share of the time: other processes held the CPU.
RUN_QUEUE_NOISY = 0.10
#: A timed chunk lasts at least this long (the timer costs about 0.1 microsecond a call).
MIN_CHUNK_S = 20e-6
MAX_REPEATS = 1000
MAX_CHUNKS = 50
#: Without the kernel's run-queue figures: the timing thread got less CPU time than this share of wall time.
CPU_SHARE_NOISY = 0.75


@dataclass
class TimingStats:
    """One side of a paired timing: milliseconds per call."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    rounds: int
    repeats: int  # calls per timed chunk (calls shorter than MIN_CHUNK_S are timed several at a time)
    chunks: int = 1  # timed chunks per sample: the sample's figure is their median

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms, "rounds": self.rounds,
                "repeats": self.repeats, "chunks": self.chunks}


@dataclass
class PairedTiming:
    """``before`` and ``after`` timed interleaved; ``ratio`` (before / after, the median of the per-round
    ratios) lies in ``[low, high]`` with 95% confidence."""

    before: TimingStats
    after: TimingStats
    ratio: float
    low: float
    high: float
    wall_s: float
    cpu_share: float  # CPU time of the timing thread / wall time of the samples
    run_queue_share: float | None  # time the process's threads waited for a core / (wall x threads); None: unknown
    threads: int
    available_cores: int
    load_start: float
    load_end: float

    def ratio_dict(self) -> dict[str, float]:
        return {"value": self.ratio, "low": self.low, "high": self.high}

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before.to_dict(), "after": self.after.to_dict(), "ratio": self.ratio_dict(),
                "wall_s": round(self.wall_s, 3), "cpu_share": round(self.cpu_share, 3),
                "run_queue_share": None if self.run_queue_share is None else round(self.run_queue_share, 3),
                "load_start": self.load_start, "load_end": self.load_end}


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free ``confidence`` interval for the median of ``values``: the order statistics
    ``(x_(k), x_(n+1-k))`` with the largest ``k`` whose binomial tail ``P(B(n, 1/2) < k)`` is at most
    ``(1 - confidence) / 2``. Fewer than 6 values cannot give 95%: their whole range is returned.

    >>> median_interval([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    (2, 9)
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median_interval needs at least one value")
    alpha = (1.0 - confidence) / 2
    k, tail = 0, 0.0
    while k < n // 2:
        tail_next = tail + math.comb(n, k) / 2.0 ** n  # P(B < k + 1)
        if tail_next > alpha:
            break
        tail, k = tail_next, k + 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


def _spread(values: list[float], repeats: int, chunks: int = 1) -> TimingStats:
    if len(values) > 1:
        deciles = statistics.quantiles(values, n=10, method="inclusive")
        p10, p90 = deciles[0], deciles[-1]
    else:
        p10 = p90 = values[0]
    return TimingStats(float(statistics.median(values)), float(p10), float(p90), len(values), repeats, chunks)


def _run_delay_ns() -> int | None:
    """Nanoseconds this process's threads have spent runnable but waiting for a core (Linux schedstat)."""
    total, seen = 0, False
    for path in glob.glob("/proc/self/task/*/schedstat"):
        try:
            with open(path) as handle:
                total += int(handle.read().split()[1])
            seen = True
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended between the listing and the read
    return total if seen else None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's logical cores."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return 0.0


@contextmanager
def fixed_threads(threads: int) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(threads)``; the previous setting comes back after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)


def _sample(run: Callable[[], Any], repeats: int, chunks: int, sync: Callable[[], None]) -> tuple[float, float, float]:
    """(median wall seconds per call over ``chunks`` timed chunks of ``repeats`` calls, their total wall seconds,
    CPU seconds of this thread). The median keeps a stall of the scheduler in one chunk out of the figure."""
    cpu = time.thread_time()
    per_call = []
    for _ in range(chunks):
        start = time.perf_counter()
        for _ in range(repeats):
            run()
            sync()
        per_call.append((time.perf_counter() - start) / repeats)
    return statistics.median(per_call), sum(per_call) * repeats, time.thread_time() - cpu


def _shape_for(run: Callable[[], Any], min_sample_s: float, sync: Callable[[], None]) -> tuple[int, int]:
    """(calls per chunk, chunks per sample): a chunk lasts at least :data:`MIN_CHUNK_S`, above the timer's noise,
    and a sample at least ``min_sample_s``, in as many chunks as fit."""
    per_call = min(_sample(run, 1, 1, sync)[0] for _ in range(3))
    repeats = min(MAX_REPEATS, max(1, math.ceil(MIN_CHUNK_S / max(per_call, 1e-9))))
    chunks = min(MAX_CHUNKS, max(1, math.ceil(min_sample_s / (per_call * repeats))))
    return repeats, chunks


def time_paired(before: Callable[[], Any], after: Callable[[], Any], *, min_rounds: int = 10,
                max_rounds: int = 200, budget_s: float = 2.0, warmup: int = 3, min_sample_s: float = 0.001,
                sync: Callable[[], None] | None = None,
                threads: int | None = None) -> PairedTiming:
    """Time ``before()`` and ``after()`` interleaved (A B, then B A, ...) after ``warmup`` calls of each.

    A timed sample lasts at least ``min_sample_s``, in chunks of at least :data:`MIN_CHUNK_S` (tiny models are
    called several times per chunk, so that the timer's own cost does not count); a sample's figure is the
    median of its chunks, so that a stall of the scheduler in one chunk does not spoil the round. Rounds go
    on until the 95% interval of the paired ratio is within :data:`TIGHT_WIDTH`, ``budget_s`` is spent or
    ``max_rounds`` is reached, and never stop before ``min_rounds`` (at least 6, the fewest that give a 95%
    interval). ``sync`` runs after every call (``torch.cuda.synchronize`` for GPU work). ``threads`` is
    recorded (the caller sets it).
    """
    sync = sync or (lambda: None)
    min_rounds = max(min_rounds, 6)
    max_rounds = max(max_rounds, min_rounds)
    runs = (before, after)
    for run in runs:
        for _ in range(warmup):
            run()
        sync()
    shapes = [_shape_for(run, min_sample_s, sync) for run in runs]

    load_start = load_average()
    delay_start = _run_delay_ns()
    started = time.perf_counter()
    times: tuple[list[float], list[float]] = ([], [])
    ratios: list[float] = []
    wall_total = cpu_total = 0.0
    for round_index in range(max_rounds):
        order = (0, 1) if round_index % 2 == 0 else (1, 0)
        for side in order:
            per_call, wall, cpu = _sample(runs[side], *shapes[side], sync)
            times[side].append(per_call * 1000.0)
            wall_total += wall
            cpu_total += cpu
        ratios.append(times[0][-1] / max(times[1][-1], 1e-12))
        if round_index + 1 >= min_rounds:
            low, high = median_interval(ratios)
            if high <= low * TIGHT_WIDTH or time.perf_counter() - started > budget_s:
                break
    elapsed = time.perf_counter() - started
    delay_end = _run_delay_ns()
    used = threads or torch.get_num_threads()
    run_queue = None
    if delay_start is not None and delay_end is not None and elapsed > 0:
        run_queue = max(0.0, (delay_end - delay_start) / 1e9 / (elapsed * used))
    low, high = median_interval(ratios)
    return PairedTiming(
        before=_spread(times[0], *shapes[0]), after=_spread(times[1], *shapes[1]),
        ratio=float(statistics.median(ratios)), low=float(low), high=float(high), wall_s=elapsed,
        cpu_share=cpu_total / wall_total if wall_total > 0 else 1.0, run_queue_share=run_queue, threads=used,
        available_cores=available_cores(), load_start=load_start, load_end=load_average(),
    )


def judge(timing: PairedTiming, *, plausible_max: float | None = None, plausible_reason: str = "") -> dict[str, Any]:
    """Flags, notes and a verdict for a paired timing.

    - ``noisy``: the interval is wider than :data:`NOISY_WIDTH`, or the machine was busy (the timing threads
      waited for a core, or the load average stayed above the cores this process may use);
    - ``implausible``: the ratio is above ``plausible_max`` (``plausible_reason`` says why that is the bound);
    - ``regression``: the whole interval is below 1.

    ``verdict`` is the one word the page colours by: ``regression`` (red), ``implausible`` or ``noisy`` (grey,
    with the interval), ``faster`` (green: the whole interval above 1), else ``no-change``.
    """
    flags: list[str] = []
    notes: list[str] = []
    if timing.high > timing.low * NOISY_WIDTH:
        flags.append("noisy")
        notes.append(f"the 95% interval of the ratio is wide ({timing.low:.2f}x to {timing.high:.2f}x over "
                     f"{timing.before.rounds} rounds): the timings varied too much to pin the ratio down")
    busy = []
    if timing.run_queue_share is not None and timing.run_queue_share > RUN_QUEUE_NOISY:
        busy.append(f"its threads waited for a free core {timing.run_queue_share:.0%} of the time")
    elif timing.run_queue_share is None and timing.threads == 1 and timing.cpu_share < CPU_SHARE_NOISY:
        busy.append(f"the timing thread got the CPU {timing.cpu_share:.0%} of the time")
    if min(timing.load_start, timing.load_end) > timing.available_cores:
        busy.append(f"the load average ({timing.load_start:.2f} at the start, {timing.load_end:.2f} at the end) "
                    f"stayed above the {timing.available_cores} cores this process may use")
    if busy:
        if "noisy" not in flags:
            flags.append("noisy")
        notes.append("other work competed for the CPU during the measurement: " + "; ".join(busy))
    if plausible_max is not None and timing.ratio > plausible_max:
        flags.append("implausible")
        notes.append(f"{timing.ratio:.2f}x is more than {plausible_max:.2f}x, the most this change can give "
                     f"({plausible_reason}): the measurement is wrong, not the model faster")
    if timing.high < 1.0:
        flags.append("regression")
        notes.append(f"the compressed model is slower here: {1 / timing.ratio:.2f}x the original's time "
                     f"(interval {timing.low:.2f}x to {timing.high:.2f}x, all below 1)")
    if "regression" in flags:
        verdict = "regression"
    elif "implausible" in flags:
        verdict = "implausible"
    elif "noisy" in flags:
        verdict = "noisy"
    elif timing.low > 1.0:
        verdict = "faster"
    else:
        verdict = "no-change"
        notes.append(f"no measurable change: the interval ({timing.low:.2f}x to {timing.high:.2f}x) contains 1")
    return {"flags": flags, "notes": notes, "verdict": verdict}
