"""Condense speedup vs Torch-Pruning, side by side on the same models and machine.

    .venv/bin/pip install --no-deps -r bench/requirements.txt     # torch-pruning, benchmark only
    .venv/bin/python bench/speedup_vs_torch_pruning.py             # default model set, writes docs/speedup-benchmark.md
    .venv/bin/python bench/speedup_vs_torch_pruning.py --quick --models resnet18 vgg11 --no-write

For every model (torchvision, ``weights=None``, random init with a fixed seed,
224x224 input) both tools prune a copy of *the same* weights:

- Condense: ``auto_set_dependency_group_ids`` on ``[{"op_types": ["Conv2d",
  "Linear"], "sparse_ratio": R, "exclude_op_names": [classifier]}]``,
  ``L1NormPruner``, ``unwrap_model``, then ``ModelSpeedup(model, dummy,
  masks).speedup_model()``; on ViT ``"MultiheadAttention"`` is added to the
  op types (R of the heads go; the embedding width and MLP hidden channels
  lose R of their channels through the Conv2d/Linear groups).
- Torch-Pruning: ``MetaPruner`` (= ``MagnitudePruner``) with
  ``MagnitudeImportance(p=1)``, ``global_pruning=False``, ``pruning_ratio=R``,
  ``ignored_layers=[classifier]``, ``root_module_types=[nn.Conv2d,
  nn.Linear]`` (its default minus LSTM), then ``pruner.step()``. For
  torchvision's ViT it follows Torch-Pruning's own torchvision example:
  ``round_to=num_heads`` and ``model.hidden_dim`` updated after the step
  (Torch-Pruning cannot drop whole heads of ``nn.MultiheadAttention``; it
  narrows every head instead, which costs the same MACs).

"classifier" is every Linear/Conv2d whose output is the 1000 classes.

Columns: CPU latency ratio original/pruned at batch 1 and 16, and at batch 1
in deployed form (every model, original included, with BatchNorm folded into
the convolution before it by ``torch.fx.experimental.optimization.fuse`` and
in ``channels_last`` memory format: what an inference deployment runs) (median of warm,
interleaved runs: each round times the original and both pruned models one
after the other, in a rotating order, so load from other processes hits all
three alike), GPU batch 1 and 64 where CUDA is available, MACs and parameter
ratio (both from ``compression_core.analysis.count_flops_params``), and the
wall time of each tool's whole pruning+speedup (median over ``--prune-repeats``
fresh copies; Condense's time is also split into dependency groups, masks and
``ModelSpeedup``). A tool that crashes gets its error in the table and the run
goes on.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import gc
import itertools
import os
import platform
import shlex
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from bench_common import condense_commit, cpu_name  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision  # noqa: E402
from torch.fx.experimental.optimization import fuse  # noqa: E402

from compression_core.analysis import count_flops_params  # noqa: E402
from compression_core.pruning import L1NormPruner  # noqa: E402
from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids  # noqa: E402

try:
    import torch_pruning as tp
except ImportError:  # reported per model, the Condense side still runs
    tp = None

DEFAULT_MODELS = [
    "resnet18", "resnet50", "vgg11", "mobilenet_v2", "densenet121", "resnext50_32x4d",
    "efficientnet_b0", "regnet_y_400mf", "shufflenet_v2_x0_5", "convnext_tiny", "vit_b_16",
]
NUM_CLASSES = 1000
TOOLS = ("Condense", "Torch-Pruning")


# --------------------------------------------------------------------------- helpers

def short_error(exc: BaseException, limit: int = 110) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_model(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=True)
    return getattr(torchvision.models, name)(**kwargs).eval()


def classifier_names(model: nn.Module) -> list[str]:
    """The layers that produce the class scores: both tools must keep their outputs."""
    names = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.out_features == NUM_CLASSES:
            names.append(name)
        elif isinstance(m, nn.Conv2d) and m.out_channels == NUM_CLASSES:
            names.append(name)
    return names


def prune_condense(model: nn.Module, dummy: torch.Tensor, ratio: float, keep: list[str]) -> dict[str, float]:
    t0 = time.perf_counter()
    config = [{"op_types": ["Conv2d", "Linear"], "sparse_ratio": ratio}]
    if isinstance(model, torchvision.models.VisionTransformer):
        config[0]["op_types"].append("MultiheadAttention")
    if keep:
        config[0]["exclude_op_names"] = list(keep)
    config = auto_set_dependency_group_ids(model, config, dummy)
    t1 = time.perf_counter()
    pruner = L1NormPruner(model, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    t2 = time.perf_counter()
    ModelSpeedup(model, dummy, masks).speedup_model()
    t3 = time.perf_counter()
    return {"total": t3 - t0, "groups": t1 - t0, "masks": t2 - t1, "speedup": t3 - t2}


def prune_torch_pruning(model: nn.Module, dummy: torch.Tensor, ratio: float, keep: list[str]) -> dict[str, float]:
    if tp is None:
        raise ImportError("torch_pruning is not installed (pip install --no-deps -r bench/requirements.txt)")
    named = dict(model.named_modules())
    extra: dict[str, Any] = {}
    is_vit = isinstance(model, torchvision.models.VisionTransformer)
    if is_vit:  # as in Torch-Pruning's torchvision example
        extra["round_to"] = model.encoder.layers[0].num_heads
    t0 = time.perf_counter()
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs=dummy,
        importance=tp.importance.MagnitudeImportance(p=1),
        global_pruning=False,
        pruning_ratio=ratio,
        ignored_layers=[named[n] for n in keep],
        root_module_types=[nn.Conv2d, nn.Linear],
        **extra,
    )
    pruner.step()
    if is_vit:
        model.hidden_dim = model.conv_proj.out_channels
    return {"total": time.perf_counter() - t0}


PRUNERS: dict[str, Callable[..., dict[str, float]]] = {
    "Condense": prune_condense,
    "Torch-Pruning": prune_torch_pruning,
}


def shapes(model: nn.Module) -> dict[str, tuple[str, dict[str, tuple[int, ...]]]]:
    out = {}
    for name, m in model.named_modules():
        own = {k: tuple(v.shape) for k, v in m.named_parameters(recurse=False)}
        if own:
            out[name] = (type(m).__name__, own)
    return out


def describe(m: nn.Module) -> str:
    if isinstance(m, nn.modules.conv._ConvNd):
        kind = type(m).__name__
        if m.groups > 1 and m.groups == m.in_channels:
            return f"{kind} depthwise {m.kernel_size[0]}x{m.kernel_size[-1]}"
        if m.groups > 1:
            return f"{kind} grouped (groups={m.groups}) {m.kernel_size[0]}x{m.kernel_size[-1]}"
        return f"{kind} {m.kernel_size[0]}x{m.kernel_size[-1]}"
    return type(m).__name__


def compare_structures(original: nn.Module, a: nn.Module, b: nn.Module) -> dict[str, list[dict]]:
    """Modules/parameters where one pruned model keeps more elements than the other."""
    sa, sb = shapes(a), shapes(b)
    orig_modules = dict(original.named_modules())
    more_a, more_b = [], []
    for name, (_, pa) in sa.items():
        if name not in sb:
            continue
        _, pb = sb[name]
        for pname in pa:
            if pname not in pb or pa[pname] == pb[pname]:
                continue
            na, nb = torch.Size(pa[pname]).numel(), torch.Size(pb[pname]).numel()
            module = orig_modules.get(name)
            full = name + ("" if pname == "weight" else f".{pname}")
            row = {"name": full.lstrip("."),
                   "kind": describe(module) if module is not None else sa[name][0],
                   "a": pa[pname], "b": pb[pname]}
            (more_a if na > nb else more_b).append(row)
    return {"condense_keeps_more": more_a, "tp_keeps_more": more_b}


def _condense_report(original: nn.Module, dummy: torch.Tensor) -> dict:
    """Condense's prunability report, or {"failed": reason} (the report is optional detail here)."""
    try:
        from compression_core.speedup import prunability_report
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return prunability_report(original, dummy)
    except Exception as exc:  # noqa: BLE001
        return {"failed": f"prunability_report failed: {short_error(exc)}"}


def why_condense_kept(original: nn.Module, cond: nn.Module, tpm: nn.Module, dummy: torch.Tensor) -> list[str]:
    """For the dependency groups whose output channels Condense keeps and Torch-Pruning removes, the
    reason Condense's own prunability report gives (or why the config left the group whole)."""
    report = _condense_report(original, dummy)
    if "failed" in report:
        return [report["failed"]]
    orig, cm, tm = dict(original.named_modules()), dict(cond.named_modules()), dict(tpm.named_modules())

    def out_dim(m: nn.Module | None) -> int | None:
        w = getattr(m, "weight", None)
        return int(w.shape[0]) if isinstance(w, torch.Tensor) and w.dim() > 0 else None

    lines = []
    for group in report.get("groups", []):
        layers = group.get("layers", [])
        kept = [n for n in layers if out_dim(cm.get(n)) is not None and out_dim(tm.get(n)) is not None
                and out_dim(cm.get(n)) > out_dim(tm.get(n))]
        if not kept:
            continue
        head = f"group of `{layers[0]}` ({len(layers)} producers, {group.get('channels')} channels)"
        if group.get("reason"):
            lines.append(f"{head}: Condense reports it unprunable: {group['reason']}")
        else:
            outside = [n for n in layers if not isinstance(orig.get(n), nn.Conv2d)]
            kinds = sorted({type(orig[n]).__name__ for n in outside if n in orig})
            if outside:
                lines.append(f"{head}: prunable by speedup, but its producers also include {len(outside)} "
                             f"{'/'.join(kinds)} layer(s) (e.g. `{outside[0]}`) that a Conv2d-only config does not "
                             "mask, so Condense keeps the group whole; Torch-Pruning prunes the whole group "
                             "from its Conv2d root")
            else:
                lines.append(f"{head}: prunable per the report, yet kept")
    return lines


def unprunable_convs(original: nn.Module, dummy: torch.Tensor) -> list[str]:
    """Condense's own reasons for the Conv2d groups it will not prune (shown when Condense fails)."""
    report = _condense_report(original, dummy)
    if "failed" in report:
        return [report["failed"]]
    named = dict(original.named_modules())
    lines = []
    for group in report.get("groups", []):
        convs = [n for n in group.get("layers", []) if isinstance(named.get(n), nn.Conv2d)]
        if convs and not group.get("prunable", True):
            lines.append(f"Condense keeps the group of `{convs[0]}` ({len(group['layers'])} producers, "
                         f"{group.get('channels')} channels): {group.get('reason')}")
    return lines


def summarize_diff(rows: list[dict], limit: int = 3) -> str:
    by_kind: dict[str, list[dict]] = {}
    for r in rows:
        if r["name"].rsplit(".", 1)[-1] in ("bias", "in_proj_bias"):
            continue  # the weight of the same module already tells it
        by_kind.setdefault(r["kind"], []).append(r)
    parts = []
    for kind, items in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        ex = ", ".join(f"`{r['name']}` {list(r['a'])} vs {list(r['b'])}" for r in items[:limit])
        more = f", +{len(items) - limit} more" if len(items) > limit else ""
        parts.append(f"{kind} x{len(items)} ({ex}{more})")
    return "; ".join(parts)


# --------------------------------------------------------------------------- latency

def deployed_form(model: nn.Module) -> nn.Module:
    """A copy as an inference deployment runs it: BatchNorm folded into the conv before it, channels_last.

    torch.fx's ``fuse`` needs a traceable model; one it cannot trace is only
    converted to channels_last (the same for the original and both pruned
    copies, so the ratio stays like for like).
    """
    try:
        deployed = fuse(model)  # works on a deep copy
    except Exception:  # noqa: BLE001 - untraceable: keep the modules, still channels_last
        deployed = copy.deepcopy(model)
    return deployed.to(memory_format=torch.channels_last).eval()


def interleaved_latency(models: dict[str, nn.Module], batch: int, *, warmup: int, runs: int,
                        device: str, seed: int, budget_s: float = 0.0, max_runs: int = 0,
                        channels_last: bool = False) -> dict[str, Any]:
    """Median forward time (ms) per model, timed round by round.

    Each round runs every model once, in the next of all orders of the models
    (itertools.permutations), so every model follows every other equally often:
    a model timed right after a bigger one pays for its evicted caches (a few %,
    measured), and a fixed rotation would always put the same model there.

    At least ``runs`` rounds; more (up to ``max_runs``) while the timed rounds
    have taken less than ``budget_s`` seconds, so that fast models get many
    samples and slow ones a few. Returns ``{key: median_ms | "ERROR ..."}``
    (plus ``"rounds"``). A model whose forward fails is dropped from later
    rounds and gets its error instead of a number.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 224, 224, generator=gen).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    alive: dict[str, nn.Module] = {}
    result: dict[str, Any] = {}
    times: dict[str, list[float]] = {}
    with torch.inference_mode():
        for key, model in models.items():
            try:
                model.to(device).eval()
                for _ in range(warmup):
                    model(x)
                sync()
                alive[key] = model
                times[key] = []
            except Exception as exc:  # noqa: BLE001 - reported in the table
                result[key] = "ERROR " + short_error(exc)
        orders = list(itertools.permutations(alive))
        began = time.perf_counter()
        r = 0
        while alive and (r < runs or (r < max_runs and (time.perf_counter() - began < budget_s
                                                        or (budget_s > 0 and r % len(orders))))):
            order = orders[r % len(orders)]
            r += 1
            for key in order:
                if key not in alive:
                    continue
                try:
                    sync()
                    start = time.perf_counter()
                    alive[key](x)
                    sync()
                    times[key].append((time.perf_counter() - start) * 1000.0)
                except Exception as exc:  # noqa: BLE001
                    result[key] = "ERROR " + short_error(exc)
                    del alive[key]
    for key in alive:
        result[key] = statistics.median(times[key])
    result["rounds"] = r
    if device != "cpu":
        for model in models.values():
            model.to("cpu")
        torch.cuda.empty_cache()
    return result


# --------------------------------------------------------------------------- one model

def bench_model(name: str, args: argparse.Namespace, settings: list[tuple]) -> dict:
    record: dict[str, Any] = {"model": name, "tools": {t: {} for t in TOOLS}}
    try:
        original = build_model(name, args.seed)
    except Exception as exc:  # noqa: BLE001
        record["error"] = short_error(exc)
        return record
    gen = torch.Generator().manual_seed(args.seed)
    dummy = torch.rand(1, 3, 224, 224, generator=gen)
    keep = classifier_names(original)
    record["kept"] = keep
    flops0, params0, _ = count_flops_params(original, dummy)
    record["flops"], record["params"] = flops0, params0

    pruned: dict[str, nn.Module] = {}
    for tool in TOOLS:
        info = record["tools"][tool]
        timings: list[dict[str, float]] = []
        try:
            for _ in range(args.prune_repeats):
                model = copy.deepcopy(original)
                gc.collect()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    timings.append(PRUNERS[tool](model, dummy, args.ratio, keep))
            model.eval()
            with torch.inference_mode():
                model(dummy)
            flops, params, _ = count_flops_params(model, dummy)
        except Exception as exc:  # noqa: BLE001 - the table shows it, the run goes on
            info["error"] = short_error(exc)
            info["error_long"] = short_error(exc, limit=400)
            info["traceback"] = traceback.format_exc(limit=-3)
            if tool == "Condense":
                info["unprunable"] = unprunable_convs(original, dummy)
            print(f"  {tool} failed on {name}: {info['error']}", flush=True)
            continue
        info["time"] = {k: statistics.median(t[k] for t in timings) for k in timings[0]}
        info["flops"], info["params"] = flops, params
        info["macs_ratio"] = flops0 / flops if flops else float("inf")
        info["params_ratio"] = params0 / params if params else float("inf")
        pruned[tool] = model
        extra = ""
        if tool == "Condense":
            t = info["time"]
            extra = f" (groups {t['groups']:.2f} s, masks {t['masks']:.2f} s, ModelSpeedup {t['speedup']:.2f} s)"
        print(f"  {tool}: pruned in {info['time']['total']:.2f} s{extra}; "
              f"MACs {flops0 / 1e9:.3f} -> {flops / 1e9:.3f} G, params {params0 / 1e6:.2f} -> {params / 1e6:.2f} M",
              flush=True)

    if len(pruned) == 2:
        record["diff"] = compare_structures(original, pruned["Condense"], pruned["Torch-Pruning"])
        if record["diff"]["condense_keeps_more"]:
            record["why_kept"] = why_condense_kept(original, pruned["Condense"], pruned["Torch-Pruning"], dummy)

    models = {"original": original, **pruned}
    deployed: dict[str, nn.Module] = {}
    for label, device, batch, warmup, runs, max_runs, budget, deploy in settings:
        if deploy and not deployed:
            deployed = {key: deployed_form(m) for key, m in models.items()}
        lat = interleaved_latency(deployed if deploy else models, batch, warmup=warmup, runs=runs, device=device,
                                  seed=args.seed, budget_s=budget, max_runs=max_runs, channels_last=deploy)
        record.setdefault("latency", {})[label] = lat
        base = lat.get("original")
        for tool in pruned:
            value = lat.get(tool)
            if isinstance(base, str):
                ratio: Any = "original: " + base
            elif isinstance(value, str):
                ratio = value
            else:
                ratio = base / value
            record["tools"][tool].setdefault("latency_ratio", {})[label] = ratio
        shown = ", ".join(f"{k} {v:.1f} ms" if isinstance(v, float) else f"{k} {v}" for k, v in lat.items()
                          if k != "rounds") + f" ({lat.get('rounds', 0)} rounds)"
        print(f"  {label}: {shown}", flush=True)
    del models, pruned, original, deployed
    gc.collect()
    return record


# --------------------------------------------------------------------------- report

def fmt_ratio(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    return f"{v:.2f}x"


def table(records: list[dict], labels: list[str]) -> str:
    head = ["Model", "Tool"] + [f"latency {lb}" for lb in labels] + ["MACs ratio", "params ratio",
                                                                     "prune+speedup (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for rec in records:
        for tool in TOOLS:
            info = rec["tools"][tool]
            if rec.get("error"):
                cells = [f"ERROR (model) {rec['error']}"] + ["–"] * (len(head) - 3)
            elif info.get("error"):
                cells = [f"ERROR {info['error']}"] + ["–"] * (len(head) - 3)
            else:
                t = info["time"]
                cells = [fmt_ratio(info.get("latency_ratio", {}).get(lb)) for lb in labels]
                cells += [fmt_ratio(info["macs_ratio"]), fmt_ratio(info["params_ratio"])]
                cells.append(f"{t['total']:.2f}" + (f" (speedup {t['speedup']:.2f})" if "speedup" in t else ""))
            lines.append("| " + " | ".join([rec["model"], tool] + cells) + " |")
    return "\n".join(lines)


def latency_table(records: list[dict], labels: list[str]) -> str:
    head = ["Model"] + [f"{lb} ms: original / Condense / TP" for lb in labels]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "|".join(["---:"] * len(labels)) + "|"]
    for rec in records:
        cells = []
        for lb in labels:
            lat = rec.get("latency", {}).get(lb, {})
            vals = []
            for key in ("original", *TOOLS):
                v = lat.get(key)
                vals.append(f"{v:.1f}" if isinstance(v, float) else ("err" if v else "–"))
            cells.append(" / ".join(vals))
        lines.append("| " + " | ".join([rec["model"]] + cells) + " |")
    return "\n".join(lines)


def targets(records: list[dict], labels: list[str], tolerance: float) -> list[tuple[str, str, str]]:
    """(target, verdict, detail) rows; every comparison is printed with its numbers."""
    out = []
    by_name = {r["model"]: r for r in records}

    r50 = by_name.get("resnet50")
    if r50 is None:
        out.append(("Condense engine time on resnet50 < 2 s", "NOT RUN", "resnet50 not in --models"))
    else:
        info = r50["tools"]["Condense"]
        if info.get("error"):
            out.append(("Condense engine time on resnet50 < 2 s", "FAIL", f"crashed: {info['error']}"))
        else:
            t = info["time"]
            tp_time = r50["tools"]["Torch-Pruning"].get("time", {}).get("total", float("nan"))
            ok = t["total"] < 2.0
            out.append(("Condense engine time on resnet50 < 2 s", "PASS" if ok else "FAIL",
                        f"dependency groups + L1 masks + ModelSpeedup = {t['total']:.2f} s "
                        f"(groups {t['groups']:.2f}, masks {t['masks']:.2f}, ModelSpeedup {t['speedup']:.2f}); "
                        f"Torch-Pruning {tp_time:.2f} s"))

    for rec in records:
        c, p = rec["tools"]["Condense"], rec["tools"]["Torch-Pruning"]
        name = f"{rec['model']}: Condense latency ratio >= Torch-Pruning's"
        if rec.get("error") or c.get("error"):
            out.append((name, "FAIL", f"Condense crashed: {rec.get('error') or c['error']}"))
            continue
        if p.get("error"):
            out.append((name, "PASS", f"Torch-Pruning crashed ({p['error']}), Condense ran"))
            continue
        verdicts, details = [], []
        for lb in labels:
            a, b = c.get("latency_ratio", {}).get(lb), p.get("latency_ratio", {}).get(lb)
            if not isinstance(a, float):
                verdicts.append("FAIL")
                details.append(f"{lb}: Condense {a}")
                continue
            if not isinstance(b, float):
                verdicts.append("PASS")
                details.append(f"{lb}: Torch-Pruning {b}")
                continue
            if a >= b:
                verdicts.append("PASS")
            elif a >= b * (1 - tolerance):
                verdicts.append("NOISE")
            else:
                verdicts.append("FAIL")
            details.append(f"{lb} {a:.2f}x vs {b:.2f}x")
        same = not rec.get("diff", {}).get("condense_keeps_more") and not rec.get("diff", {}).get("tp_keeps_more")
        if "FAIL" in verdicts:
            verdict = "FAIL"
        elif "NOISE" in verdicts:
            verdict = f"PASS (within {tolerance:.0%} noise)"
        else:
            verdict = "PASS"
        note = "; same pruned shapes in both tools" if same else "; pruned shapes differ (see notes)"
        out.append((name, verdict, ", ".join(details) + note))

    for model in ("resnet50", "vgg11"):
        rec = by_name.get(model)
        name = f"{model}: Condense latency ratio >= 0.75 x MACs ratio"
        if rec is None:
            out.append((name, "NOT RUN", f"{model} not in --models"))
            continue
        c, p = rec["tools"]["Condense"], rec["tools"]["Torch-Pruning"]
        if rec.get("error") or c.get("error"):
            out.append((name, "FAIL", f"Condense crashed: {rec.get('error') or c.get('error')}"))
            continue
        need = 0.75 * c["macs_ratio"]
        verdicts, details = [], []
        for lb in labels:
            if not lb.startswith("CPU"):
                continue
            a = c.get("latency_ratio", {}).get(lb)
            ok = isinstance(a, float) and a >= need
            verdicts.append(ok)
            details.append(f"{lb} {fmt_ratio(a)} {'pass' if ok else 'FAIL'}")
        tp_ratios = p.get("latency_ratio", {}) if not p.get("error") else {}
        tp_text = ", ".join(f"{lb} {fmt_ratio(v)}" for lb, v in tp_ratios.items() if lb.startswith("CPU"))
        verdict = "PASS" if all(verdicts) else ("FAIL" if not any(verdicts) else
                                                 f"PARTIAL ({sum(verdicts)} of {len(verdicts)} columns)")
        out.append((name, verdict,
                    f"need >= {need:.2f}x (MACs {c['macs_ratio']:.2f}x): " + ", ".join(details)
                    + (f" (Torch-Pruning, same MACs target: {tp_text})" if tp_text else "")))
    return out


def machine_info(threads: int) -> dict[str, str]:
    cpu = cpu_name()
    info = {
        "CPU": f"{cpu}, {os.cpu_count()} logical CPUs",
        "threads": f"{threads} intra-op (torch.set_num_threads), same for every model and tool",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch-pruning": getattr(tp, "__version__", "not installed") if tp else "not installed",
        "python": platform.python_version(),
        "GPU": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (GPU columns skipped)",
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }
    commit = condense_commit(ROOT)
    if commit:
        info["Condense commit"] = commit
    try:
        from importlib.metadata import version
        info["torch-pruning"] = version("torch-pruning")  # the module's own __version__ lags the wheel
    except Exception:  # noqa: BLE001
        pass
    return info


def wait_for_quiet(max_load: float, timeout: float) -> float:
    start = time.time()
    load = os.getloadavg()[0]
    while load >= max_load and time.time() - start < timeout:
        print(f"load average {load:.2f} >= {max_load}: waiting...", flush=True)
        time.sleep(30)
        load = os.getloadavg()[0]
    return load


# --------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS,
                        help="torchvision classifier names, space- or comma-separated (default: %(default)s)")
    parser.add_argument("--ratio", type=float, default=0.5, help="per-layer channel ratio to remove")
    parser.add_argument("--quick", action="store_true", help="fewer runs: a smoke test, not numbers to publish")
    parser.add_argument("--runs-b1", type=int, help="at least this many timed rounds at batch 1 (default 30, quick 8)")
    parser.add_argument("--runs-b16", type=int, help="at least this many timed rounds at batch 16 (default 6, quick 2)")
    parser.add_argument("--budget-b1", type=float, help="keep adding rounds at batch 1 (up to 300) while under "
                        "this many seconds per model (default 15, quick 0)")
    parser.add_argument("--budget-b16", type=float, help="the same at batch 16, up to 60 rounds (default 30, quick 0)")
    parser.add_argument("--prune-repeats", type=int, help="pruning runs per tool, median time (default 3, quick 1)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="relative latency-ratio gap reported as noise rather than FAIL (default 0.05)")
    parser.add_argument("--max-load", type=float, default=None,
                        help="wait (up to --wait-s) until the 1-min load average is below this before starting")
    parser.add_argument("--wait-s", type=float, default=900)
    parser.add_argument("--out", default=str(ROOT / "docs" / "speedup-benchmark.md"))
    parser.add_argument("--no-write", action="store_true", help="only print, do not write --out")
    args = parser.parse_args()
    args.models = [m for item in args.models for m in item.split(",") if m]
    args.runs_b1 = args.runs_b1 or (8 if args.quick else 30)
    args.runs_b16 = args.runs_b16 or (2 if args.quick else 6)
    args.prune_repeats = args.prune_repeats or (1 if args.quick else 3)
    if args.budget_b1 is None:
        args.budget_b1 = 0.0 if args.quick else 15.0
    if args.budget_b16 is None:
        args.budget_b16 = 0.0 if args.quick else 30.0

    torch.set_num_threads(args.threads)
    # (label, device, batch, warm-up rounds, min rounds, max rounds, time budget in s per model, deployed form)
    settings = [("CPU b1", "cpu", 1, 3, args.runs_b1, 300, args.budget_b1, False),
                ("CPU b16", "cpu", 16, 1, args.runs_b16, 60, args.budget_b16, False),
                ("CPU b1 deployed", "cpu", 1, 3, args.runs_b1, 300, args.budget_b1, True)]
    if torch.cuda.is_available():
        settings += [("GPU b1", "cuda", 1, 20, max(args.runs_b1, 50), 500, args.budget_b1 / 3, False),
                     ("GPU b64", "cuda", 64, 5, max(args.runs_b16, 20), 200, args.budget_b16 / 3, False)]
    labels = [s[0] for s in settings]

    load_before = os.getloadavg()[0]
    if args.max_load is not None:
        load_before = wait_for_quiet(args.max_load, args.wait_s)
    info = machine_info(args.threads)
    print("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    if not torch.cuda.is_available():
        print("CUDA not available: GPU columns (batch 1 and 64) skipped", flush=True)

    # Pay one-off costs (imports, first fx trace, allocator) for both tools before timing anything.
    warm = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, NUM_CLASSES)).eval()
    for tool in TOOLS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                PRUNERS[tool](copy.deepcopy(warm), torch.rand(1, 3, 16, 16), args.ratio, ["6"])
        except Exception:  # noqa: BLE001 - the real runs report it
            pass

    records = []
    started = time.time()
    for name in args.models:
        print(f"\n== {name}", flush=True)
        records.append(bench_model(name, args, settings))
    elapsed = time.time() - started
    load_after = os.getloadavg()[0]

    main_table = table(records, labels)
    lat_table = latency_table(records, labels)
    target_rows = targets(records, labels, args.tolerance)
    target_lines = [f"- **{v}** {t}: {d}" for t, v, d in target_rows]
    notes = []
    for rec in records:
        d = rec.get("diff")
        if d and d["condense_keeps_more"]:
            notes.append(f"- **{rec['model']}**: Condense keeps what Torch-Pruning removes in "
                         + summarize_diff(d["condense_keeps_more"]) + " (shapes: Condense vs Torch-Pruning)")
        for line in rec.get("why_kept", []):
            notes.append(f"  - {line}")
        if d and d["tp_keeps_more"]:
            notes.append(f"- **{rec['model']}**: Torch-Pruning keeps what Condense removes in "
                         + summarize_diff(d["tp_keeps_more"]) + " (shapes: Condense vs Torch-Pruning)")
        for tool in TOOLS:
            result = rec["tools"][tool]
            if result.get("error"):
                notes.append(f"- **{rec['model']}**: {tool} failed: `{result.get('error_long', result['error'])}`")
                notes.extend(f"  - {line}" for line in result.get("unprunable", []))
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]])

    print("\n" + main_table + "\n")
    print(lat_table + "\n")
    print("Targets:")
    print("\n".join(target_lines))
    if notes:
        print("\nNotes:")
        print("\n".join(notes))
    print(f"\nload average: {load_before:.2f} at start, {load_after:.2f} at end; {elapsed / 60:.1f} min")

    if args.no_write:
        return
    doc = [
        "# Speedup benchmark: Condense vs Torch-Pruning",
        "",
        "Generated by `bench/speedup_vs_torch_pruning.py`; rerun it to refresh (numbers depend on the",
        "machine and its load). Same models, same random weights, same per-layer ratio and the same",
        "process for both tools.",
        "",
        f"Command: `{command}` (from the repository root, with `.venv/bin/python`; torch-pruning from "
        "`bench/requirements.txt`, installed with `pip install --no-deps`).",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        f"- 1-min load average: {load_before:.2f} at start, {load_after:.2f} at end (run took {elapsed / 60:.1f} min)",
        "",
        "## Setup",
        "",
        f"- Models: torchvision classifiers, `weights=None`, seed {args.seed}, input 1x3x224x224 as dummy input.",
        f"- Both tools remove {args.ratio:.0%} of the output channels of every Conv2d and Linear (per layer, no global",
        "  ranking), L1 magnitude, coupled layers pruned together; the layers producing the 1000 classes are kept;",
        f"  on ViT Condense removes {args.ratio:.0%} of the heads, Torch-Pruning narrows every head by as much.",
        "- Condense: `auto_set_dependency_group_ids` + `L1NormPruner` + `ModelSpeedup(...).speedup_model()`.",
        "- Torch-Pruning: `MetaPruner(importance=MagnitudeImportance(p=1), global_pruning=False, "
        f"pruning_ratio={args.ratio}, ignored_layers=[classifier], root_module_types=[nn.Conv2d, nn.Linear])` + `step()`;",
        "  on ViT `round_to=num_heads` and `model.hidden_dim` fixed after the step, as in its torchvision example.",
        "- Latency: ratio original/pruned of the median of warm runs under `torch.inference_mode`, "
        f"batch 1: at least {args.runs_b1} rounds, more up to {args.budget_b1:.0f} s per model;",
        f"  batch 16: at least {args.runs_b16} rounds, more up to {args.budget_b16:.0f} s per model "
        "(GPU: batch 1 and 64 where CUDA exists);",
        "  `b1 deployed`: every model (original too) with BatchNorm folded into the preceding conv",
        "  (`torch.fx.experimental.optimization.fuse`) and in channels_last memory format, input channels_last;",
        "  each round times the original and both pruned models back to back, cycling through all their orders",
        "  (so load from other processes hits all three alike and each follows each other equally often).",
        "- MACs and parameters: `compression_core.analysis.count_flops_params` for both tools.",
        f"- prune+speedup: wall time of the whole pruning and model surgery, median of {args.prune_repeats} "
        "fresh copies; for Condense `(speedup ...)` is `ModelSpeedup` alone.",
        "",
        "## Results",
        "",
        main_table,
        "",
        "Median latencies:",
        "",
        lat_table,
        "",
        "## Targets (issue 3)",
        "",
        *target_lines,
        "",
        f"Latency comparisons within {args.tolerance:.0%} are marked as noise: on a shared 2-core machine two",
        "identically shaped models differ by that much from run to run.",
    ]
    if notes:
        doc += ["", "## Notes", "", *notes]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(doc) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
