"""How stable is a job's reported speedup? The old method (two medians minutes apart) against the new one.

    .venv/bin/python bench/measurement_stability.py                # 5 runs idle + 5 runs under load, ~2-4 min
    .venv/bin/python bench/measurement_stability.py --runs 3 --busy 4

Prints one markdown table; numbers depend on the machine (CPU, threads, what else runs).

The same job every run: the digits CNN (random init), L1NormPruner at 50% on
every Conv2d, dependency-aware, speedup, run through `compression_core.jobs.run_job`.
Each run gives two reported speedups of the same pruned model at batch 1 and
batch 16 in PyTorch eager on the CPU:

- old: what Condense reported before: the original's median of 10 calls timed
  when the job starts, the pruned model's median of 10 calls timed after the
  job is done (re-created here with `measure_latency`, as the old runner did),
  and their ratio;
- new: the job's own `metrics.latency` row: the two models timed interleaved in
  one process, the median of the per-round ratios with its 95% interval, and the
  `noisy` flag.

Half the runs are on the machine as it is ("idle"), half with `--busy` busy-looping
processes started beside the job ("loaded").
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.bench_common import command_line, condense_commit  # noqa: E402
from compression_core.analysis import machine_info, measure_latency  # noqa: E402
from compression_core.io import load_model  # noqa: E402
from compression_core.jobs import ModelSource, Recipe, run_job  # noqa: E402

BATCHES = (1, 16)


def busy_loop() -> None:
    while True:
        pass


def one_run(out: Path) -> dict:
    """One job; the old method's ratio around it and the new method's from inside it."""
    source = ModelSource(architecture="digits_cnn")
    example = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    original = source.load()
    old_before = {b: measure_latency(original, example, runs=10, batch_size=b)["median_ms"] for b in BATCHES}
    started = time.perf_counter()
    result = run_job(Recipe(model=source, input_shape=[1, 8, 8], algorithm="L1NormPruner",
                            params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]},
                            output_dir=str(out), latency_batch_sizes=BATCHES))
    job_s = time.perf_counter() - started
    pruned = load_model(out / "model.safetensors", architecture="digits_cnn")
    old_after = {b: measure_latency(pruned, example, runs=10, batch_size=b)["median_ms"] for b in BATCHES}
    rows = {row["batch"]: row for row in result.metrics["latency"]["rows"] if row["runtime"] == "pytorch-cpu"}
    return {"old": {b: old_before[b] / old_after[b] for b in BATCHES},
            "new": {b: rows[b]["ratio"] for b in BATCHES},
            "noisy": {b: "noisy" in rows[b]["flags"] for b in BATCHES},
            "verdict": {b: rows[b]["verdict"] for b in BATCHES},
            "machine": result.metrics["latency"]["machine"], "job_s": job_s,
            "macs_ratio": result.metrics["before"]["flops"] / result.metrics["after"]["flops"]}


def run_condition(runs: int, busy: int) -> list[dict]:
    workers = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(busy)]
    for worker in workers:
        worker.start()
    try:
        results = []
        for index in range(runs):
            with tempfile.TemporaryDirectory() as out:
                results.append(one_run(Path(out)))
            print(f"  {'loaded' if busy else 'idle'} run {index + 1}: {results[-1]['job_s']:.1f} s", flush=True)
        return results
    finally:
        for worker in workers:
            worker.terminate()
            worker.join()


def spread(values: list[float]) -> str:
    """min, max and (max - min) / median."""
    return f"{min(values):.2f} to {max(values):.2f} ({(max(values) - min(values)) / statistics.median(values):.0%})"


def table(conditions: dict[str, list[dict]]) -> str:
    lines = ["| Condition | Run | " + " | ".join(f"old b{b} | new b{b} (95% interval) | new b{b} verdict"
                                                    for b in BATCHES) + " |",
             "|---|---:|" + "---:|---:|---|" * len(BATCHES)]
    for name, results in conditions.items():
        for index, result in enumerate(results, 1):
            cells = []
            for b in BATCHES:
                new = result["new"][b]
                cells += [f"{result['old'][b]:.2f}x", f"{new['value']:.2f}x ({new['low']:.2f}-{new['high']:.2f})",
                          result["verdict"][b]]
            lines.append(f"| {name} | {index} | " + " | ".join(cells) + " |")
    lines += ["", "| Condition | Batch | old: min to max (spread) | new: min to max (spread) | new flagged noisy |",
              "|---|---:|---|---|---:|"]
    for name, results in conditions.items():
        for b in BATCHES:
            old = [r["old"][b] for r in results]
            new = [r["new"][b]["value"] for r in results]
            noisy = sum(r["noisy"][b] for r in results)
            lines.append(f"| {name} | {b} | {spread(old)} | {spread(new)} | {noisy} of {len(results)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5, help="runs per condition")
    parser.add_argument("--busy", type=int, default=None, help="busy processes in the loaded runs (default: one "
                                                              "per core available)")
    args = parser.parse_args()
    machine = machine_info(torch.get_num_threads())
    busy = args.busy or machine["available_cores"]
    print(f"machine: {machine['cpu']}, {machine['logical_cores']} logical cores ({machine['available_cores']} "
          f"available), torch {machine['torch']} on {machine['threads']} threads, onnxruntime "
          f"{machine['onnxruntime']}, load average {machine['load_start']}")
    print(f"condense: {condense_commit(ROOT)}; {command_line('bench/measurement_stability.py')}")
    started = time.perf_counter()
    conditions = {"idle": run_condition(args.runs, 0), f"loaded ({busy} busy)": run_condition(args.runs, busy)}
    macs = conditions["idle"][0]["macs_ratio"]
    print(f"\nL1NormPruner 50% on the digits CNN: MACs {macs:.2f}x fewer; ratios are before / after "
          f"(PyTorch eager, CPU); {time.perf_counter() - started:.0f} s in all\n")
    print(table(conditions))


if __name__ == "__main__":
    main()
