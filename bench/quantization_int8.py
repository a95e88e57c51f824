"""float32 vs real int8 (PyTorch) vs int8 ONNX (onnxruntime) on this CPU.

    .venv/bin/python bench/quantization_int8.py                      # writes docs/quantization-benchmark.md
    .venv/bin/python bench/quantization_int8.py --quick --models mlp --no-write

Models (random init, seed 0):

- ``resnet18``, ``mobilenet_v2``: torchvision, ``weights=None``, 224x224
  inputs. A freshly initialised network's BatchNorm layers hold mean 0 /
  variance 1, with which mobilenet_v2's activations shrink to ~1e-10 by the
  last layer (every output equal: nothing to compare); so the BatchNorm
  statistics are first re-estimated on 64 random images (train-mode forward
  passes, cumulative average), which gives activations of unit scale.
- ``mlp``: a linear-heavy model, Linear 1024->2048->2048->2048->1000 with ReLUs.

Variants, each from the same float model:

- ``float32``: the model in PyTorch, eval mode, as built (the baseline).
- ``int8 static``: :class:`compression_core.quantization.PostTrainingQuantizer`,
  x86 engine, histogram observers, per-channel weights, Conv/Linear+BN+ReLU
  fused, calibrated on 32 random inputs (batches of 16).
- ``int8 dynamic`` (mlp only): the same quantizer with ``mode="dynamic"``.
- ``float32 ONNX`` / ``int8 ONNX``: ``compression_core.io.save_model`` and
  :func:`compression_core.io.export_int8_onnx` (QDQ, per-channel
  weights, calibrated on the same 32 inputs) run in onnxruntime (CPU, 2
  intra-op threads, no spinning).

Columns: median latency of warm runs at batch 1 and 16, every variant of a
model timed round by round in a rotating order (as ``interleaved_latency``
in ``bench/speedup_vs_torch_pruning.py``), and its speedup over float32
PyTorch. In each round a variant gets one untimed call and then ``--block``
(3) timed ones: a server runs one model over and over, so its weights stay
in the CPU caches, whereas a single call right after another model's finds
them evicted (resnet18 int8 then took 22.6 ms instead of about 19: the
small int8 model loses most, since 11 MB of weights fit the caches far
better than float32's 45 MB). Then file size (``torch.save(state_dict)`` bytes for PyTorch models,
the .onnx file for ONNX) and how many times smaller than the float32
model's; agreement with the float32 model on 64 fresh random inputs
(top-1: same arg-max; cosine similarity of the outputs).

A second table times resnet18's int8 model at batch 1 with each quantized
engine (x86, fbgemm, onednn; conversion and run on that engine) and with
NCHW vs channels_last inputs.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402
from bench_common import condense_commit, cpu_name  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision  # noqa: E402

from compression_core.analysis.fidelity import output_fidelity  # noqa: E402
from compression_core.evaluation import predict_logits  # noqa: E402
from compression_core.io import cpu_has_vnni, export_int8_onnx, onnx_session, save_model  # noqa: E402
from compression_core.quantization import PostTrainingQuantizer, serialized_bytes  # noqa: E402

MODELS = ["resnet18", "mobilenet_v2", "mlp"]
OUT = ROOT / "docs" / "quantization-benchmark.md"


# --------------------------------------------------------------------------- models and inputs
def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                         nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 1000))


def inputs_for(name: str, count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if name == "mlp":
        return torch.randn(count, 1024, generator=generator)
    return torch.rand(count, 3, 224, 224, generator=generator)


# Not evaluation's inference loop: a forward pass in training mode, for the BatchNorm statistics only.
@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch: int = 16) -> None:
    """Re-estimate BatchNorm running statistics on ``images`` (cumulative average)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    for start in range(0, len(images), batch):
        model(images[start:start + batch])
    model.eval()


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if name == "mlp":
        return mlp().eval()
    model = getattr(torchvision.models, name)(weights=None)
    recalibrate_batchnorm(model, inputs_for(name, 64, seed + 100))
    return model


# --------------------------------------------------------------------------- timing
def interleaved(runners: dict[str, Callable[[], Any]], *, warmup: int, runs: int, budget_s: float,
                max_runs: int, block: int = 1) -> dict[str, float]:
    """Median ms per runner; each round gives every runner, in the next permutation of their order, one
    untimed call (its weights back into the caches the others used) and ``block`` timed calls."""
    times: dict[str, list[float]] = {key: [] for key in runners}
    with torch.inference_mode():
        for run in runners.values():
            for _ in range(warmup):
                run()
        # With 4 or 5 variants, every permutation would be 24-120 rounds: cycle through them as far as time allows.
        orders = list(itertools.permutations(runners))
        began = time.perf_counter()
        r = 0
        while r < runs or (r < max_runs and time.perf_counter() - began < budget_s):
            for key in orders[r % len(orders)]:
                runners[key]()
                for _ in range(block):
                    start = time.perf_counter()
                    runners[key]()
                    times[key].append((time.perf_counter() - start) * 1000.0)
            r += 1
    return {key: statistics.median(values) for key, values in times.items()}


def torch_runner(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    return lambda: model(x)


def onnx_runner(session: onnxruntime.InferenceSession, x: torch.Tensor) -> Callable[[], Any]:
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def onnx_forward(session: onnxruntime.InferenceSession) -> Callable[[torch.Tensor], torch.Tensor]:
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(np.asarray(session.run(None, {name: x.numpy()})[0]))


# --------------------------------------------------------------------------- one model
def measure(name: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    model = build(name)
    calibration = inputs_for(name, 32, 1)
    test = inputs_for(name, 64, 2)
    variants: dict[str, dict[str, Any]] = {"float32": {"model": model, "bytes": serialized_bytes(model)}}

    t0 = time.perf_counter()
    static, _ = PostTrainingQuantizer(model, calibration_data=calibration, calibration_batch_size=16).compress()
    variants["int8 static"] = {"model": static, "bytes": serialized_bytes(static),
                               "build_s": time.perf_counter() - t0}
    if name == "mlp":
        t0 = time.perf_counter()
        dynamic, _ = PostTrainingQuantizer(model, mode="dynamic").compress()
        variants["int8 dynamic"] = {"model": dynamic, "bytes": serialized_bytes(dynamic),
                                    "build_s": time.perf_counter() - t0}
    float_onnx = save_model(model, workdir / f"{name}.onnx", example_inputs=calibration[:1])
    variants["float32 ONNX"] = {"session": onnx_session(float_onnx["path"], args.threads),
                                "bytes": float_onnx["bytes"]}
    t0 = time.perf_counter()
    int8_onnx = export_int8_onnx(model, calibration, workdir / f"{name}.int8.onnx", batch_size=16)
    variants["int8 ONNX"] = {"session": onnx_session(int8_onnx["path"], args.threads), "bytes": int8_onnx["bytes"],
                             "build_s": time.perf_counter() - t0}

    reference = predict_logits(model, test)
    spread = {"across_inputs": float(reference.std(0).mean()), "across_outputs": float(reference.std(1).mean())}
    for variant in variants.values():
        forward = variant["model"] if "model" in variant else onnx_forward(variant["session"])
        variant["fidelity"] = output_fidelity(reference, predict_logits(forward, test))

    for batch in (1, 16):
        x = test[:batch].contiguous()
        runners = {key: torch_runner(v["model"], x) if "model" in v else onnx_runner(v["session"], x)
                   for key, v in variants.items()}
        heavy = name != "mlp" and batch > 1
        medians = interleaved(runners, warmup=args.warmup, runs=max(3, args.runs // (3 if heavy else 1)),
                              budget_s=args.budget_s, max_runs=args.max_runs, block=args.block)
        for key, value in medians.items():
            variants[key][f"b{batch}"] = value

    rows = []
    base = variants["float32"]
    for key, v in variants.items():
        rows.append({
            "model": name, "variant": key,
            "b1": v["b1"], "b1_x": base["b1"] / v["b1"], "b16": v["b16"], "b16_x": base["b16"] / v["b16"],
            "bytes": v["bytes"], "smaller": base["bytes"] / v["bytes"],
            "top1": v["fidelity"]["top1_agreement"], "cosine": v["fidelity"]["cosine_similarity"],
            "build_s": v.get("build_s"), "spread": spread,
        })
        print(format_row(rows[-1]), flush=True)
    return rows


def explore_engines(args: argparse.Namespace) -> list[dict[str, Any]]:
    """resnet18 int8 at batch 1: engine x86 / fbgemm / onednn, NCHW vs channels_last inputs."""
    model = build("resnet18")
    calibration = inputs_for("resnet18", 32, 1)
    x = inputs_for("resnet18", 1, 3)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    runners: dict[str, Callable[[], Any]] = {"float32 NCHW": torch_runner(model, x)}
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    runners["float32 channels_last"] = torch_runner(cl_model, x_cl)
    for engine in ("x86", "fbgemm", "onednn"):
        if engine not in torch.backends.quantized.supported_engines:
            continue
        int8, _ = PostTrainingQuantizer(model, calibration_data=calibration, calibration_batch_size=16,
                                        backend=engine).compress()

        def run(m=int8, e=engine, inp=None):
            torch.backends.quantized.engine = e
            return m(inp)

        runners[f"int8 {engine} NCHW"] = lambda run=run: run(inp=x)
        runners[f"int8 {engine} channels_last"] = lambda run=run: run(inp=x_cl)
    torch.backends.quantized.engine = "x86"
    # 8 runners: every permutation is too many; rotate the order instead.
    keys = list(runners)
    times: dict[str, list[float]] = {k: [] for k in keys}
    with torch.inference_mode():
        for run in runners.values():
            for _ in range(args.warmup):
                run()
        for r in range(args.runs):
            order = keys[r % len(keys):] + keys[:r % len(keys)]
            for key in order:
                start = time.perf_counter()
                runners[key]()
                times[key].append((time.perf_counter() - start) * 1000.0)
    torch.backends.quantized.engine = "x86"
    base = statistics.median(times["float32 NCHW"])
    rows = [{"variant": k, "b1": statistics.median(v), "b1_x": base / statistics.median(v)} for k, v in times.items()]
    for row in rows:
        print(f"resnet18 {row['variant']:<24} {row['b1']:8.2f} ms {row['b1_x']:5.2f}x", flush=True)
    return rows


# --------------------------------------------------------------------------- report
def format_row(row: dict[str, Any]) -> str:
    top1 = "-" if row["top1"] is None else f"{row['top1']:.3f}"
    return (f"| {row['model']} | {row['variant']} | {row['b1']:.2f} | {row['b1_x']:.2f}x | {row['b16']:.1f} | "
            f"{row['b16_x']:.2f}x | {row['bytes'] / 1e6:.2f} | {row['smaller']:.2f}x | {top1} | "
            f"{row['cosine']:.4f} |")


def machine_info(threads: int) -> dict[str, str]:
    cpu = cpu_name()
    info = {
        "CPU": f"{cpu}, {os.cpu_count()} logical CPUs, VNNI: {'yes' if cpu_has_vnni() else 'no (AVX2)'}",
        "threads": f"{threads} (torch.set_num_threads and onnxruntime intra-op), every variant",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }
    commit = condense_commit(ROOT)
    if commit:
        info["Condense commit"] = commit
    return info


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        for variant in ("int8 static", "int8 dynamic", "int8 ONNX"):
            row = next((r for r in rows if r["model"] == name and r["variant"] == variant), None)
            if row is None:
                continue
            speed = "PASS" if row["b1_x"] >= 3.0 else "FAIL"
            size = "PASS" if row["smaller"] >= 3.5 else "FAIL"
            out.append(f"- {name}, {variant}: batch-1 speedup {row['b1_x']:.2f}x (target >= 3x: {speed}); "
                       f"{row['smaller']:.2f}x smaller (target >= 3.5x: {size})")
    return out


def write_markdown(rows, engine_rows, info, command, load) -> None:
    lines = [
        "# Quantization benchmark: float32 vs real int8 vs int8 ONNX",
        "",
        "Generated by `bench/quantization_int8.py`; rerun it to refresh (numbers depend on the machine and its load).",
        "",
        f"Command: `{command}` (from the repository root, with `.venv/bin/python`).",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        f"- 1-min load average: {load[0]:.2f} at start, {load[1]:.2f} at end",
        "",
        "## Setup",
        "",
        "- resnet18, mobilenet_v2: torchvision, `weights=None`, seed 0, 224x224 inputs, BatchNorm statistics",
        "  re-estimated on 64 random images (a fresh mobilenet_v2 otherwise outputs ~1e-10 everywhere);",
        "  mlp: Linear 1024->2048->2048->2048->1000 with ReLUs.",
        "- int8 static: `PostTrainingQuantizer(model, calibration_data=32 random inputs)`: FX graph mode, x86",
        "  engine, histogram observers (7-bit activation range, PyTorch's x86 default), per-channel symmetric",
        "  int8 weights, Conv/Linear+BN+ReLU fused. int8 dynamic (mlp): `mode=\"dynamic\"` (weights int8,",
        "  activations quantized per batch).",
        "- ONNX: `save_model` (opset 17) for float32; `export_int8_onnx` (onnxruntime `quantize_static`, QDQ,",
        "  per-channel int8 weights, uint8 activations, min/max calibration on the same 32 inputs, `reduce_range`",
        "  on CPUs without VNNI) for int8; onnxruntime CPU provider.",
        "- Latency: median of warm runs, all variants of a model timed round by round in rotating order; in",
        "  each round a variant gets one untimed call, then 3 timed ones (`--block`), so that its weights are in",
        "  the caches, as in a server that runs one model.",
        "  Speedup = float32 PyTorch latency / variant latency.",
        "- Size: `torch.save(model.state_dict())` bytes (PyTorch), the .onnx file (ONNX); \"smaller\" is against",
        "  float32 PyTorch.",
        "- Agreement with float32 PyTorch on 64 fresh random inputs: top-1 (same arg-max) and mean cosine",
        "  similarity of the outputs. On random weights and random images the 1000 logits are close together,",
        "  so top-1 agreement is a harsh measure; cosine is the steadier one.",
        "",
        "## Results",
        "",
        "| Model | Variant | Batch 1 ms | Speedup | Batch 16 ms | Speedup | Size MB | Smaller | Top-1 agree | Cosine |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[format_row(r) for r in rows],
        "",
        "Targets (batch 1, against float32 PyTorch):",
        "",
        *verdicts(rows),
        "",
        "## Notes",
        "",
        "- This CPU has AVX2 but no VNNI: int8 dot products go through `vpmaddubsw`/`vpmaddwd`, whose int16",
        "  intermediate saturates, so PyTorch's x86 engine keeps activations to 7 bits (turning that off lowered",
        "  mobilenet_v2's cosine from 0.96 to 0.89 in a one-off check on this machine) and onnxruntime is given",
        "  `reduce_range` (7-bit weights). PyTorch's and onnxruntime's int8 kernels have VNNI paths (one",
        "  instruction per four int8 multiply-adds, no saturation); no VNNI machine was available to measure them.",
        "- Build time (s) of each int8 variant: "
        + ", ".join(f"{r['model']} {r['variant']} {r['build_s']:.1f}" for r in rows if r.get("build_s")) + ".",
        "- How much the float32 outputs vary with the input (std over the 64 inputs, mean over outputs) vs across",
        "  the outputs of one input: "
        + "; ".join(f"{r['model']} {r['spread']['across_inputs']:.3g} vs {r['spread']['across_outputs']:.3g}"
                    for r in rows if r["variant"] == "float32")
        + ". Where the first is small (random weights make the output almost independent of the input), the",
        "  int8 rounding noise is large next to it, and top-1 agreement drops while cosine stays high.",
    ]
    if engine_rows:
        lines += [
            "",
            "## resnet18 int8 at batch 1: engines and memory format",
            "",
            "| Variant | Batch 1 ms | Speedup over float32 NCHW |",
            "|---|---|---|",
            *[f"| {r['variant']} | {r['b1']:.2f} | {r['b1_x']:.2f}x |" for r in engine_rows],
        ]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=24, help="minimum timed rounds at batch 1")
    parser.add_argument("--max-runs", type=int, default=120)
    parser.add_argument("--block", type=int, default=3,
                        help="timed calls per variant and round, after one untimed call (warm caches)")
    parser.add_argument("--budget-s", type=float, default=20.0, help="keep timing rounds while under this")
    parser.add_argument("--quick", action="store_true", help="few runs, no engine table")
    parser.add_argument("--no-engines", action="store_true", help="skip the engine / memory-format table")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--max-load", type=float, default=None, help="wait until the 1-min load is below this")
    parser.add_argument("--wait-s", type=float, default=600.0)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.max_runs, args.budget_s, args.no_engines = 6, 12, 0.0, True
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = "x86"
    if args.max_load is not None:
        start = time.time()
        while os.getloadavg()[0] >= args.max_load and time.time() - start < args.wait_s:
            print(f"load average {os.getloadavg()[0]:.2f} >= {args.max_load}: waiting...", flush=True)
            time.sleep(30)
    # First use of torch.fx / torch.ao imports a lot: do it before any build time is measured.
    PostTrainingQuantizer(nn.Sequential(nn.Linear(4, 4)), calibration_data=torch.rand(2, 4)).compress()
    load_start = os.getloadavg()[0]
    command = "python bench/quantization_int8.py " + " ".join(sys.argv[1:])
    print("| Model | Variant | Batch 1 ms | Speedup | Batch 16 ms | Speedup | Size MB | Smaller | Top-1 | Cosine |")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="condense-qbench-") as tmp:
        for name in args.models:
            rows += measure(name, args, Path(tmp))
    engine_rows = [] if args.no_engines or "resnet18" not in args.models else explore_engines(args)
    print("\n".join(verdicts(rows)))
    if not args.no_write:
        write_markdown(rows, engine_rows, machine_info(args.threads), command.strip(),
                       (load_start, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
