"""Before/after figures of real compression jobs, through the same pipeline a worker runs.

    .venv/bin/python bench/pipeline_before_after.py                 # resnet18 + digits_cnn, L1 50%, speedup
    .venv/bin/python bench/pipeline_before_after.py --models resnet18 --ratio 0.5

Prints one table per model, then its paired latency (before and after timed interleaved on each runtime,
the ratio with its 95% interval and the flags the job page shows); numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from compression_core.models import ARCHITECTURES  # noqa: E402
from compression_core.evaluation import train_digits_cnn  # noqa: E402
from compression_core.io import save_model  # noqa: E402
from compression_core.jobs import ModelSource, Recipe, run_job  # noqa: E402

ROWS = [
    ("params", "Parameters", 1e6, "M"),
    ("flops", "FLOPs (MACs)", 1e6, "M"),
    ("onnx_bytes", "ONNX file", 1e6, "MB"),
    ("weights_bytes", "safetensors file", 1e6, "MB"),
    ("accuracy", "Accuracy (digits test)", 0.01, "%"),
]


def run(architecture: str, ratio: float, runs: int) -> dict:
    dataset = "digits" if ARCHITECTURES[architecture].input_shape == (1, 8, 8) else None
    with tempfile.TemporaryDirectory() as out:
        source = ModelSource(architecture=architecture)
        if architecture == "digits_cnn":
            # Accuracy only means something for a trained model: train it on the
            # digits train split and hand the weights over as a user would.
            source.path = save_model(train_digits_cnn(), Path(out) / "trained.safetensors")["path"]
        recipe = Recipe(
            model=source,
            input_shape=list(ARCHITECTURES[architecture].input_shape),
            algorithm="L1NormPruner",
            params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": ratio}]},
            dataset=dataset,
            output_dir=out,
            latency_runs=runs,
        )
        return run_job(recipe)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["resnet18", "digits_cnn"])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = {}
    for architecture in args.models:
        result = run(architecture, args.ratio, args.runs)
        results[architecture] = result
        before, after = result.metrics["before"], result.metrics["after"]
        fidelity = result.metrics["fidelity"]
        print(f"\n{architecture}: L1NormPruner, sparse_ratio {args.ratio} on every Conv2d, dependency-aware, speedup")
        print(f"| {'metric':28} | {'before':>10} | {'after':>10} | {'before/after':>12} |")
        print(f"|{'-' * 30}|{'-' * 12}|{'-' * 12}|{'-' * 14}|")
        for key, label, scale, unit in ROWS:
            if key not in before:
                continue
            b, a = before[key] / scale, after[key] / scale
            if key == "accuracy":
                ratio = f"{a - b:+.1f} pts"
            else:
                ratio = f"{b / a:.2f}x" if a else "-"
            print(f"| {label + ' (' + unit + ')':28} | {b:10.2f} | {a:10.2f} | {ratio:>12} |")
        latency = result.metrics["latency"]
        print(f"| {'latency (ms, median)':28} | {'runtime, batch':>25} | {'before':>9} | {'after':>9} | "
              f"{'before/after (95% interval)':>28} | flags")
        for row in latency["rows"]:
            r = row["ratio"]
            ratio = f"{r['value']:.2f}x ({r['low']:.2f}-{r['high']:.2f})" if r else "no ratio"
            print(f"| {row['form']:28} | {row['runtime'] + ', ' + str(row['batch']):>25} | "
                  f"{row['before']['median_ms']:9.3f} | {row['after']['median_ms']:9.3f} | {ratio:>28} | "
                  f"{', '.join(row['flags']) or '-'}")
        machine = latency["machine"]
        print(f"timed on {machine['cpu']}, {machine['threads']} threads, load average {machine['load_start']} -> "
              f"{machine['load_end']}")
        print(f"fidelity to the original: cosine {fidelity['cosine_similarity']:.4f}, "
              f"top-1 agreement {fidelity['top1_agreement']}")
        print("engine time (s): " + ", ".join(f"{k} {v}" for k, v in result.timings.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
