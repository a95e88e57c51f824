"""Every pruner on a small trained CNN: parameters, FLOPs, accuracy and wall time, in one table.

    .venv/bin/python bench/pruners_on_digits.py                       # all pruners, 50/75/90%, writes docs/pruner-benchmark.md
    .venv/bin/python bench/pruners_on_digits.py --pruners L1NormPruner SlimPruner --ratios 0.5 --no-write

The model is ``digits_cnn`` (two convolutions with batch norm and two linear
layers) trained on the scikit-learn digits train split; accuracy is on the
held-out test split. Each pruner gets the same trained weights and prunes
the two convolutions and the hidden linear layer (the classifier is kept):

- channel pruners (L1, L2, FPGM, APoZ, mean activation, Taylor, AGP over
  L1, NetAdapt over L1): dependency-aware, then ``ModelSpeedup``, so
  parameters and FLOPs are those of the smaller model;
- SlimPruner: the two batch-norm layers (global ranking, as in NNI), then
  ``ModelSpeedup``;
- fine-grained pruners (Level, ADMM, Lottery Ticket, simulated annealing,
  AutoCompress): the model keeps its shape; "nonzero" counts the weights
  left, and FLOPs are the dense ones;
- AutoTargetPruner gets a FLOPs target instead: keep ``1 - sparsity`` of the
  original MACs; it chooses the per-layer sparsities itself.

The pruners' evaluator trains on 80% of the digits train split and
evaluates on the other 20% (the searching pruners choose by that metric);
the accuracies below are on the separate test split. "no FT" is the
accuracy right after pruning; "FT" after fine-tuning
(``--finetune-epochs``, Adam, the same for every pruner; fine-grained masks
stay applied while it trains). Time is the pruner's own wall time
(including its training), not the fine-tuning.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from bench_common import command_line, cpu_name, write_report  # noqa: E402

import compression_core.pruning as pruning  # noqa: E402
from compression_core.analysis import count_flops_params  # noqa: E402
from compression_core.data import load_builtin_dataset  # noqa: E402
from compression_core.evaluation import tensor_evaluator, train_digits_cnn  # noqa: E402
from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids  # noqa: E402

CHANNEL = ["L1NormPruner", "L2NormPruner", "FPGMPruner", "ActivationAPoZRankPruner", "ActivationMeanRankPruner",
           "TaylorFOWeightPruner", "SlimPruner", "AGPPruner", "NetAdaptPruner", "AutoTargetPruner"]
FINE = ["LevelPruner", "ADMMPruner", "LotteryTicketPruner", "SimulatedAnnealingPruner", "AutoCompressPruner"]
TARGETS = ["conv1", "conv2", "fc1"]

# Settings small enough for a CPU run of the whole table in minutes; the same for every ratio.
KWARGS: dict[str, dict[str, Any]] = {
    "ActivationAPoZRankPruner": {"training_steps": 20},
    "ActivationMeanRankPruner": {"training_steps": 20},
    "TaylorFOWeightPruner": {"training_steps": 20},
    "SlimPruner": {"training_steps": 100, "regular_scale": 1e-3},
    "ADMMPruner": {"iterations": 5, "training_steps": 30, "rho": 1e-2},
    "AGPPruner": {"total_iteration": 5, "training_steps": 30},
    "LotteryTicketPruner": {"total_iteration": 3, "training_steps": 60},
    "SimulatedAnnealingPruner": {"stop_temperature": 30.0},
    "NetAdaptPruner": {"sparsity_per_iteration": 0.1, "training_steps": 15},
    "AutoCompressPruner": {"total_iteration": 2, "admm_iterations": 3, "training_steps": 30, "rho": 1e-2,
                           "stop_temperature": 40.0},
}


def config_for(name: str, ratio: float, model: torch.nn.Module, dummy: torch.Tensor) -> list[dict]:
    if name == "SlimPruner":
        return [{"op_types": ["BatchNorm2d"], "sparse_ratio": ratio}]
    config = [{"op_names": TARGETS, "sparse_ratio": ratio}]
    if name in CHANNEL:
        config = auto_set_dependency_group_ids(model, config, dummy)
    return config


def nonzero_weights(model: torch.nn.Module) -> int:
    return sum(int((m.weight != 0).sum()) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def run_one(name: str, ratio: float, trained: torch.nn.Module, data, finetune_epochs: int) -> dict[str, Any]:
    train, test = data
    model = copy.deepcopy(trained)
    dummy = test[0][:1]
    # The pruners (the searching ones compare candidates by the metric) see a validation split carved
    # from the training data; the test split only measures the result.
    cut = len(train[0]) * 4 // 5
    evaluator = tensor_evaluator((train[0][:cut], train[1][:cut]), (train[0][cut:], train[1][cut:]),
                                 lr=1e-3, batch_size=64)
    tester = tensor_evaluator(train, test, lr=1e-3, batch_size=64)
    cls = getattr(pruning, name)
    kwargs = dict(KWARGS.get(name, {}))
    if name == "AutoTargetPruner":
        # It takes a target instead of a sparsity: keep (1 - ratio) of the FLOPs.
        kwargs.update(target="flops", target_ratio=1.0 - ratio)
    if name not in ("LevelPruner", "L1NormPruner", "L2NormPruner", "FPGMPruner"):
        kwargs["evaluator"] = evaluator
    started = time.perf_counter()
    pruner = cls(model, config_for(name, ratio, model, dummy), **kwargs)
    _, masks = pruner.compress()
    seconds = time.perf_counter() - started
    record: dict[str, Any] = {"time": seconds}
    if name in CHANNEL:
        pruner.unwrap_model()
        ModelSpeedup(model, dummy, masks).speedup_model()
    model.eval()
    record["acc"] = tester.evaluate(model)
    flops, params, _ = count_flops_params(model, dummy)
    record.update(flops=flops, params=params, nonzero=nonzero_weights(model))
    if finetune_epochs:
        tester.train(model, max_epochs=finetune_epochs)  # fine-grained masks still hooked
        record["acc_ft"] = tester.evaluate(model)
    if name not in CHANNEL:
        pruner.unwrap_model()
        record["nonzero"] = nonzero_weights(model)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pruners", nargs="+", default=CHANNEL + FINE)
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.5, 0.75, 0.9])
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "pruner-benchmark.md"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    torch.manual_seed(args.seed)
    trained = train_digits_cnn(epochs=10, seed=args.seed)
    data = (load_builtin_dataset("digits", "train"), load_builtin_dataset("digits", "test"))
    evaluator = tensor_evaluator(*data)
    base_acc = evaluator.evaluate(trained)
    flops0, params0, _ = count_flops_params(trained, data[1][0][:1])
    nonzero0 = nonzero_weights(trained)
    print(f"digits_cnn: {params0} parameters, {flops0 / 1e6:.3f} M MACs, test accuracy {base_acc:.2%}", flush=True)

    rows = []
    started = time.time()
    for name in args.pruners:
        for ratio in args.ratios:
            torch.manual_seed(args.seed)
            try:
                record = run_one(name, ratio, trained, data, args.finetune_epochs)
            except Exception as exc:  # noqa: BLE001 - the table shows it, the run goes on
                record = {"error": f"{type(exc).__name__}: {exc}"[:120]}
            rows.append((name, ratio, record))
            shown = record.get("error") or (
                f"params {record['params']}, nonzero {record['nonzero']}, MACs {record['flops'] / 1e6:.3f} M, "
                f"acc {record['acc']:.2%} -> {record.get('acc_ft', float('nan')):.2%} after FT, {record['time']:.1f} s")
            print(f"{name} {ratio:.0%}: {shown}", flush=True)

    head = ("| Pruner | sparsity | params | nonzero weights | MACs (M) | accuracy no FT | accuracy FT | "
            "pruner time (s) |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|",
             f"| (trained, unpruned) | 0% | {params0} | {nonzero0} | {flops0 / 1e6:.3f} | {base_acc:.1%} | – | – |"]
    for name, ratio, r in rows:
        if "error" in r:
            lines.append(f"| {name} | {ratio:.0%} | ERROR {r['error'].replace('|', '/')} | | | | | |")
            continue
        ft = f"{r['acc_ft']:.1%}" if "acc_ft" in r else "–"
        lines.append(f"| {name} | {ratio:.0%} | {r['params']} | {r['nonzero']} | {r['flops'] / 1e6:.3f} | "
                     f"{r['acc']:.1%} | {ft} | {r['time']:.2f} |")
    table = "\n".join(lines)
    print("\n" + table)
    elapsed = (time.time() - started) / 60
    if args.no_write:
        return
    write_report(args.out, heading=[
        "# Pruner benchmark: every pruner on the digits CNN",
        "",
        "Generated by `bench/pruners_on_digits.py` (rerun it to refresh). Modelled on NNI's pruner comparison:",
        "the same trained model, every pruner at several sparsities, with and without fine-tuning.",
    ], details=[
        f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC, run took {elapsed:.1f} min",
        f"Command: `{command_line('bench/pruners_on_digits.py')}`",
    ], module_doc=__doc__, table=table)

if __name__ == "__main__":
    main()
