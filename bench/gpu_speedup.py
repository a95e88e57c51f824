"""What pruning and float16 buy on a GPU: latency, throughput and peak memory against the original.

    .venv/bin/python bench/gpu_speedup.py            # resnet50 and mobilenet_v2, batch 1 and 64: ~1-2 min on an H200
    .venv/bin/python bench/gpu_speedup.py --quick    # fewer rounds: well under a minute

Needs a CUDA GPU; without one it prints one line saying so and exits 0.

For each model (torchvision, ``weights=None``, random init with a fixed seed,
224x224 input, on ``cuda``):

- original: float32, eval mode;
- pruned: ``auto_set_dependency_group_ids`` on ``[{"op_types": ["Conv2d"],
  "sparse_ratio": 0.5}]``, ``L1NormPruner``, then ``ModelSpeedup`` with a CUDA
  dummy input (the channels are removed on the GPU, as a GPU job does);
- float16: the original in half precision (``model.half()``, float16 inputs).

Each compressed form is timed interleaved with the original
(``compression_core.analysis.time_paired``: warm-up calls, then rounds that
alternate A B / B A, every call followed by ``torch.cuda.synchronize()``), per
batch size. Latency is the median and the 10th-90th percentiles of the rounds;
throughput is batch / median; the ratio is original / form with its 95% interval
(the original's own row shows the figures of its pairing with the pruned model).
Peak memory is ``torch.cuda.max_memory_allocated`` over a few forward passes of
that form alone at that batch (weights plus activations; PyTorch's allocator,
not the driver's view). cuDNN's defaults are kept (TF32 convolutions on Ampere
and newer, no autotuning), as a job runs.
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from bench.bench_common import command_line, condense_commit  # noqa: E402

MODELS = ("resnet50", "mobilenet_v2")
BATCHES = (1, 64)
SPARSE_RATIO = 0.5
MEMORY_PASSES = 3


def build(name: str) -> nn.Module:
    # torchvision is only needed once a GPU is there to run the models on.
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def pruned_copy(model: nn.Module, dummy: torch.Tensor) -> nn.Module:
    """An L1-pruned copy at :data:`SPARSE_RATIO` with its channels removed on the GPU."""
    from compression_core.pruning import L1NormPruner
    from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids

    pruned = copy.deepcopy(model)
    config = auto_set_dependency_group_ids(pruned, [{"op_types": ["Conv2d"], "sparse_ratio": SPARSE_RATIO}], dummy)
    pruner = L1NormPruner(pruned, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return ModelSpeedup(pruned, dummy, masks).speedup_model().eval()


def peak_memory(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes PyTorch's allocator held at most over a few forward passes (weights, input and activations)."""
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(MEMORY_PASSES):
        model(x)
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated())


def run(models: tuple[str, ...], batches: tuple[int, ...], min_rounds: int, budget_s: float) -> list[dict]:
    from compression_core.analysis import count_flops_params, time_paired

    rows = []
    for name in models:
        original = build(name).cuda()
        dummy = torch.randn(1, 3, 224, 224, device="cuda")
        pruned = pruned_copy(original, dummy)
        forms = {"pruned 50% (L1, speedup)": (pruned, torch.float32),
                 "float16": (copy.deepcopy(original).half().eval(), torch.float16)}
        original_macs = count_flops_params(original, dummy)[0]
        # float16 does the original's arithmetic, in half precision.
        macs = {"pruned 50% (L1, speedup)": count_flops_params(pruned, dummy)[0], "float16": original_macs}
        with torch.inference_mode():
            for batch in batches:
                x = torch.randn(batch, 3, 224, 224, device="cuda")
                original_row = None
                for label, (model, dtype) in forms.items():
                    xf = x.to(dtype)
                    timing = time_paired(lambda: original(x), lambda: model(xf), min_rounds=min_rounds,
                                         max_rounds=max(10 * min_rounds, 60), budget_s=budget_s, warmup=10,
                                         sync=torch.cuda.synchronize)
                    if original_row is None:
                        original_row = {"model": name, "form": "original (float32)", "batch": batch,
                                        "stats": timing.before, "ratio": None, "macs": original_macs,
                                        "memory": peak_memory(original, x)}
                        rows.append(original_row)
                    rows.append({"model": name, "form": label, "batch": batch, "stats": timing.after,
                                 "ratio": (timing.ratio, timing.low, timing.high), "macs": macs[label],
                                 "memory": peak_memory(model, xf)})
                    print(f"  {name} batch {batch} {label}: {timing.ratio:.2f}x", file=sys.stderr, flush=True)
        del original, pruned, forms
        gc.collect()
        torch.cuda.empty_cache()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | form | batch | median ms | p10-p90 ms | images/s | speedup (95% interval) | GMACs "
             "| peak GPU memory MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        stats = row["stats"]
        ratio = "-" if row["ratio"] is None else f"{row['ratio'][0]:.2f}x ({row['ratio'][1]:.2f}-{row['ratio'][2]:.2f})"
        macs = "-" if row["macs"] is None else f"{row['macs'] / 1e9:.2f}"
        lines.append(f"| {row['model']} | {row['form']} | {row['batch']} | {stats.median_ms:.3f} "
                     f"| {stats.p10_ms:.3f}-{stats.p90_ms:.3f} | {row['batch'] * 1000.0 / stats.median_ms:,.0f} "
                     f"| {ratio} | {macs} | {row['memory'] / 2**20:,.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds per row (a smoke run)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu_speedup.py needs a CUDA GPU; this machine has none, so nothing was measured")
        return 0
    min_rounds, budget_s = (6, 0.5) if args.quick else (20, 3.0)
    rows = run(tuple(args.models), BATCHES, min_rounds, budget_s)
    print(f"# GPU speedup: {torch.cuda.get_device_name(0)}\n")
    print(f"- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
          f"TF32 convolutions {'on' if torch.backends.cudnn.allow_tf32 else 'off'}")
    print(f"- Condense {condense_commit(ROOT) or 'unknown commit'}")
    print(f"- `{command_line('bench/gpu_speedup.py')}`; rounds >= {min_rounds}, budget {budget_s:g} s per pair\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
