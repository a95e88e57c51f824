"""Every quantizer on the digits CNN: accuracy against float32, bits, model bytes and wall time, in one table.

    .venv/bin/python bench/quantization_digits.py                 # writes docs/quantization-digits.md
    .venv/bin/python bench/quantization_digits.py --epochs 2 --no-write

The model is ``digits_cnn`` (conv-bn-relu, conv-bn-relu, maxpool, fc1-relu,
fc2; 38k parameters) trained once on the scikit-learn digits train split
(1437 images, bundled with scikit-learn: nothing is downloaded); every
quantizer starts from those weights, and accuracy is on the 360-image test
split (one image is 0.28 points).

- ``PostTrainingQuantizer``: static int8, x86 engine, histogram observers,
  per-channel weights, Conv+BN+ReLU fused, calibrated on the whole train
  split (batches of 32); a real ``torch.ao.nn.quantized`` model.
- ``QATQuantizer``: the same int8 model after fake-quantized fine-tuning on
  the train split (Adam; BatchNorm statistics frozen after the first epoch).
- ``NaiveQuantizer``: weights of the four Conv/Linear layers rounded to
  8 bits (per-channel scales), no data; simulated.
- ``DoReFaQuantizer`` at 8, 4 and 2 bits: weights of the four Conv/Linear
  layers, one scale per layer, fine-tuned with the same evaluator and epochs
  as QAT; simulated.
- ``BNNQuantizer``: +1/-1 weights in conv1, conv2 and fc1 (fc2, the
  classifier, stays float, as in the paper and NNI's example) and binary
  activations at the outputs of bn1 and bn2. The model has ReLUs, not
  Hardtanh, and the sign of a ReLU's output is +1 everywhere, so the sign is
  taken before the ReLU, at the BatchNorm output; the ReLU then turns the
  +-1 into {0, 1}, so conv2 and fc1 see 1-bit inputs (conv1 sees the image,
  fc2 fc1's float ReLU output). fc1's output is left float: no BatchNorm
  precedes its ReLU, its sums of 512 +-1 products lie far outside [-1, 1]
  where the straight-through gradient is zero, and binarizing it took the
  model to chance (10%) in our runs; the paper puts a BatchNorm after every
  layer, fully connected ones included. A second row binarizes the same
  weights and no activation. Both are trained with BNN's own learning rate
  (``--bnn-lr``) for ``--bnn-epochs``: binary networks need longer.

"bits" is weights/activations. "model bytes": ``torch.save(state_dict)``
bytes (``serialized_bytes``) for float32 and the real int8 models; for the
simulated ones (float32 tensors in PyTorch) the size of the
``model.packed.safetensors`` a job writes (``save_packed``: each quantized
weight's codes at its bit width plus its grid, the other tensors such as
biases, BatchNorm and BNN's fc2 in float32), marked "packed". Time is the
quantizer's wall time, training included (for float32: training the model).
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from bench_common import command_line, condense_commit, cpu_name, write_report  # noqa: E402

from compression_core.data import load_builtin_dataset  # noqa: E402
from compression_core.evaluation import evaluate_accuracy, tensor_evaluator, train_digits_cnn  # noqa: E402
from compression_core.quantization import (  # noqa: E402
    BNNQuantizer,
    DoReFaQuantizer,
    NaiveQuantizer,
    PostTrainingQuantizer,
    QATQuantizer,
    save_packed,
    serialized_bytes,
)

OUT = ROOT / "docs" / "quantization-digits.md"
LAYERS = {"op_types": ["Conv2d", "Linear"]}
BNN_WEIGHTS = [{"op_names": ["conv1", "conv2", "fc1"], "quant_types": ["weight"], "quant_bits": 1}]
BNN_CONFIG = BNN_WEIGHTS + [{"op_names": ["bn1", "bn2"], "quant_types": ["output"], "quant_bits": 1}]


def packed_bytes(model: nn.Module, calibration: dict[str, Any]) -> int:
    """Size of the ``model.packed.safetensors`` a job writes: each quantized weight at its bit width."""
    with tempfile.TemporaryDirectory() as workdir:
        return save_packed(model, calibration, Path(workdir) / "model.packed.safetensors")["bytes"]


def timed(run: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-epochs", type=int, default=20, help="training of the float model")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs of QAT and DoReFa")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of QAT and DoReFa")
    parser.add_argument("--bnn-epochs", type=int, default=20)
    parser.add_argument("--bnn-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    started_all = time.time()
    load_start = os.getloadavg()[0]

    train = load_builtin_dataset("digits", "train")
    test = load_builtin_dataset("digits", "test")
    trained, train_time = timed(lambda: train_digits_cnn(epochs=args.train_epochs, seed=args.seed))
    base = evaluate_accuracy(trained, *test)
    print(f"digits_cnn float32: test accuracy {base:.2%} ({args.train_epochs} epochs, {train_time:.1f} s)",
          flush=True)

    def evaluator(lr: float):
        return tensor_evaluator(train, test, lr=lr, batch_size=64, seed=args.seed)

    rows: list[dict[str, Any]] = [{
        "method": "float32", "bits": "32/32", "runs": "float32", "acc": base,
        "bytes": f"{serialized_bytes(trained):,} (saved)", "time": train_time}]

    def add(method: str, bits: str, runs: str, run: Callable[[], tuple[nn.Module, str]]) -> None:
        torch.manual_seed(args.seed)
        (model, size), seconds = timed(run)
        accuracy = evaluate_accuracy(model, *test)
        rows.append({"method": method, "bits": bits, "runs": runs, "acc": accuracy, "bytes": size, "time": seconds})
        print(f"{method}: {accuracy:.2%} ({100 * (accuracy - base):+.1f} points), {size}, {seconds:.1f} s", flush=True)

    def ptq():
        model, _ = PostTrainingQuantizer(trained, [LAYERS], calibration_data=train[0]).compress()
        return model, f"{serialized_bytes(model):,} (saved)"

    def qat():
        steps_per_epoch = math.ceil(len(train[0]) / 64)
        quantizer = QATQuantizer(trained, [LAYERS], evaluator(args.lr), freeze_bn_step=steps_per_epoch)
        model, _ = quantizer.compress(max_epochs=args.epochs)
        return model, f"{serialized_bytes(model):,} (saved)"

    def naive():
        model, calibration = NaiveQuantizer(copy.deepcopy(trained), [{**LAYERS, "quant_types": ["weight"],
                                                                      "quant_bits": 8}]).compress()
        return model, f"{packed_bytes(model, calibration):,} (packed)"

    def dorefa(bits: int):
        def run():
            quantizer = DoReFaQuantizer(trained, [{**LAYERS, "quant_types": ["weight"], "quant_bits": bits}],
                                        evaluator(args.lr))
            model, calibration = quantizer.compress(max_epochs=args.epochs)
            return model, f"{packed_bytes(model, calibration):,} (packed)"
        return run

    def bnn(config: list[dict]):
        def run():
            quantizer = BNNQuantizer(trained, config, evaluator(args.bnn_lr))
            model, calibration = quantizer.compress(max_epochs=args.bnn_epochs)
            return model, f"{packed_bytes(model, calibration):,} (packed)"
        return run

    add("PostTrainingQuantizer (static)", "8/8", "real int8 (x86)", ptq)
    add(f"QATQuantizer ({args.epochs} epochs)", "8/8", "real int8 (x86)", qat)
    add("NaiveQuantizer", "8/32", "simulated", naive)
    for bits in (8, 4, 2):
        add(f"DoReFaQuantizer ({args.epochs} epochs)", f"{bits}/32", "simulated", dorefa(bits))
    add(f"BNNQuantizer ({args.bnn_epochs} epochs)", "1/1 at bn1, bn2 (fc2 32/32)", "simulated", bnn(BNN_CONFIG))
    add(f"BNNQuantizer, weights only ({args.bnn_epochs} epochs)", "1/32 (fc2 32/32)", "simulated",
        bnn(BNN_WEIGHTS))

    lines = ["| method | bits (w/a) | what runs | test accuracy | vs float (points) | model bytes | time (s) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        delta = "–" if r["method"] == "float32" else f"{100 * (r['acc'] - base):+.1f}"
        lines.append(f"| {r['method']} | {r['bits']} | {r['runs']} | {r['acc']:.1%} | {delta} | {r['bytes']} | "
                     f"{r['time']:.1f} |")
    table = "\n".join(lines)
    print("\n" + table)
    elapsed = (time.time() - started_all) / 60
    if args.no_write:
        return
    raw = sum(t.numel() * t.element_size() for t in trained.state_dict().values())
    commit = condense_commit(ROOT)
    write_report(args.out, heading=[
        "# Quantization on the digits CNN: accuracy of every quantizer",
        "",
        "Generated by `bench/quantization_digits.py` (rerun it to refresh).",
    ], details=[
        f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC, run took {elapsed:.1f} min; "
        f"1-min load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end (times are wall "
        "times: other work on the machine inflates them)",
        *([f"Condense commit: {commit}"] if commit else []),
        f"Command: `{command_line('bench/quantization_digits.py')}`",
        f"Settings: float model {args.train_epochs} epochs; QAT and DoReFa {args.epochs} epochs, Adam lr "
        f"{args.lr:g}, batch 64; BNN {args.bnn_epochs} epochs, Adam lr {args.bnn_lr:g}",
    ], module_doc=__doc__, table=table,
        notes=[f"For scale: the float32 model's tensors take {raw:,} bytes unpacked (no file overhead)."])

if __name__ == "__main__":
    main()
