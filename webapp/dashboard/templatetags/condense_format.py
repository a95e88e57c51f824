"""Human-readable numbers for the dashboard: 11.7 M params, 1.82 GMACs, 44.7 MB.

Usage in a template::

    {% load condense_format %}
    {{ model.summary.params|count }}  {{ model.summary.flops|macs }}  {{ model.size_bytes|bytes }}
    {% metric_rows job.metrics as rows %}
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from numbers import Real

from django import template
from django.utils import timezone

register = template.Library()

DASH = "\u2014"


def _number(value) -> float | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, Real):
        number = float(value)
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
    return number if math.isfinite(number) else None


def _sig(number: float, digits: int = 3) -> str:
    """``number`` to ``digits`` significant digits, never in exponent form."""
    if number == 0:
        return "0"
    decimals = max(digits - 1 - int(math.floor(math.log10(abs(number)))), 0)
    text = f"{number:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _scaled(value, units: tuple[str, ...], base: float = 1000.0, suffix: str = "") -> str:
    number = _number(value)
    if number is None:
        return DASH
    index = 0
    while abs(number) >= base and index < len(units) - 1:
        number /= base
        index += 1
    if index == 0 and float(number).is_integer():
        text = str(int(number))
    else:
        text = _sig(number)
        # rounding can reach the next unit (999.96 k -> "1000 k")
        if abs(float(text)) >= base and index < len(units) - 1:
            text, index = _sig(float(text) / base), index + 1
    unit = units[index] + suffix
    return f"{text} {unit}".strip()


@register.filter
def count(value) -> str:
    """12 -> "12", 11689512 -> "11.7 M"."""
    return _scaled(value, ("", "k", "M", "G", "T"))


@register.filter
def macs(value) -> str:
    """1818000000 -> "1.82 GMACs"."""
    return _scaled(value, ("", "K", "M", "G", "T"), suffix="MACs")


@register.filter(name="bytes")
def bytes_(value) -> str:
    """46758048 -> "46.8 MB" (decimal units)."""
    return _scaled(value, ("B", "kB", "MB", "GB", "TB"))


@register.filter
def ms(value) -> str:
    number = _number(value)
    return DASH if number is None else f"{_sig(number)} ms"


@register.filter
def seconds(value) -> str:
    number = _number(value)
    return DASH if number is None else f"{number:.2f} s"


@register.filter
def duration(value) -> str:
    """Seconds as the job page's clock shows them (static/condense.js writes the same): "4 s", "1 min 12 s",
    "2 h 3 min"."""
    number = _number(value)
    if number is None:
        return DASH
    whole = max(0, round(number))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


@register.filter
def ago(moment, now=None) -> str:
    """How long ago ``moment`` (a datetime) was: "12 s ago", "3 min ago", "5 h ago", "2 days ago"."""
    if moment is None or moment == "":
        return DASH
    elapsed = max(((now or timezone.now()) - moment).total_seconds(), 0)
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if elapsed >= size:
            amount = int(elapsed // size)
            return f"{amount} {unit}{'s' if unit == 'day' and amount > 1 else ''} ago"
    return f"{int(elapsed)} s ago"


@register.filter
def isotime(value) -> str:
    """An ISO 8601 timestamp kept in JSON (a job's run history) as "2026-12-01 20:20:19" UTC."""
    if not value:
        return DASH
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(value)


@register.filter
def percent(value, decimals: int = 1) -> str:
    """A fraction as a percentage: 0.5 -> "50.0 %"."""
    number = _number(value)
    return DASH if number is None else f"{number * 100:.{int(decimals)}f} %"


@register.filter
def sig(value) -> str:
    """A plain number to 3 significant digits (small numbers in exponent form)."""
    number = _number(value)
    if number is None:
        return DASH
    if number != 0 and abs(number) < 1e-3:
        return f"{number:.2e}"
    return _sig(number, 4)


@register.filter
def shape(value) -> str:
    """[3, 224, 224] -> "3 × 224 × 224"; anything missing -> "—"."""
    if value in (None, "", []):
        return DASH
    if isinstance(value, (list, tuple)):
        return " \u00d7 ".join(str(d) for d in value)
    return str(value)


@register.simple_tag
def channel_changes(before, after) -> str:
    """What speedup changed in a layer's shape attributes, e.g. "out_channels 16 → 8"
    (attributes that kept their value are left out)."""
    before, after = before or {}, after or {}
    if not isinstance(before, dict) or not isinstance(after, dict):
        return DASH
    changes = [
        f"{key} {shape(before.get(key))} \u2192 {shape(after.get(key))}"
        for key in list(before) + [k for k in after if k not in before]
        if before.get(key) != after.get(key)
    ]
    return ", ".join(changes) or DASH


@register.filter
def get(mapping, key):
    """Dictionary lookup with a variable key: ``{{ row|get:name }}``."""
    if isinstance(mapping, dict):
        return mapping.get(key)
    return None


# -- the before/after metrics table --------------------------------------------

_FIXED = {
    "params": ("Parameters", count),
    "flops": ("FLOPs (MACs)", macs),
    "onnx_bytes": ("ONNX file size", bytes_),
    "weights_bytes": ("Weights file size (safetensors; int8: TorchScript)", bytes_),
    "accuracy": ("Accuracy", percent),
}
_ORDER = ["params", "flops", "onnx_bytes", "weights_bytes"]
_LATENCY = re.compile(r"^latency_(?P<device>[a-z]+)_b(?P<batch>\d+)_ms$")


def _describe(key: str):
    if key in _FIXED:
        return _FIXED[key]
    match = _LATENCY.match(key)
    if match:
        return f"{match['device'].upper()} latency, batch {match['batch']} (median)", ms
    label = key.replace("_", " ").capitalize()
    if key.endswith("_bytes"):
        return label.removesuffix(" bytes"), bytes_
    if key.endswith("_ms"):
        return label.removesuffix(" ms"), ms
    return label, sig


def _sort_key(key: str):
    if key in _ORDER:
        return (0, _ORDER.index(key), 0, "")
    match = _LATENCY.match(key)
    if match:
        return (1, 0 if match["device"] == "cpu" else 1, int(match["batch"]), key)
    if key == "accuracy":
        return (3, 0, 0, key)
    return (2, 0, 0, key)


@register.simple_tag
def metric_rows(metrics) -> list[dict]:
    """Rows for the before/after table of ``job.metrics``.

    Each row: key, label, before/after (raw and formatted), ratio (before/after,
    "2.00×") or for accuracy the change in points, and whether it improved.
    A latency row takes its ratio, interval and colour from the job's paired
    timing (``metrics.latency``); without one (jobs measured before it existed)
    its ratio is left uncoloured, since two medians timed apart prove nothing.

    A job that compressed the model (``before`` and ``after``) gets the rows
    measured on both sides; one that only measured it (a sensitivity analysis:
    ``before`` alone) gets that side's rows, and the page shows them without
    the after columns. A row is never all dashes.
    """
    metrics = metrics or {}
    headlines = _headline_rows(metrics.get("latency"))
    before = metrics.get("before") or {}
    after = metrics.get("after") or {}
    keys = [k for k in {**before, **after} if not k.startswith("_")]
    measured = [side for side in (before, after) if side]
    keys = [k for k in keys if all(_number(side.get(k)) is not None for side in measured)]
    rows = []
    for key in sorted(keys, key=_sort_key):
        label, fmt = _describe(key)
        b, a = _number(before.get(key)), _number(after.get(key))
        row = {
            "key": key,
            "label": label,
            "before": before.get(key),
            "after": after.get(key),
            "before_text": fmt(b),
            "after_text": fmt(a),
            "change": DASH,
            "improved": None,
        }
        if b is not None and a is not None:
            if key == "accuracy":
                delta = (a - b) * 100
                row["change"] = f"{delta:+.1f} pts"
                row["improved"] = delta >= 0
            elif (match := _LATENCY.match(key)) is not None:
                _latency_change(row, headlines.get((match["device"], int(match["batch"]))), b / a if a > 0 else None)
            elif a > 0:
                ratio = b / a
                row["change"] = _times_text(ratio)
                row["improved"] = ratio > 1.0 if abs(ratio - 1.0) > 0.005 else None
        rows.append(row)
    return rows


def _times_text(ratio: float) -> str:
    return f"{ratio:.2f}\u00d7" if 0.1 <= ratio < 1000 else f"{_sig(ratio)}\u00d7"


def _headline_rows(latency) -> dict[tuple[str, int], dict]:
    """The paired timings of the job's deliverable, by ``(device, batch)``."""
    rows = (latency or {}).get("rows") or []
    return {("gpu" if r.get("runtime", "").endswith("cuda") else "cpu", int(r.get("batch", 0))): r
            for r in rows if r.get("headline")}


def _latency_change(row: dict, timing: dict | None, unpaired: float | None) -> None:
    """A before/after table's latency ratio, coloured only as the paired timing allows."""
    if timing is None:
        row["change"] = f"{_times_text(unpaired)} (timed apart, unverified)" if unpaired else DASH
        row["verdict"] = "unknown"
        row["note"] = "the two medians were timed minutes apart, not interleaved: the ratio may be machine noise"
        return
    judged = latency_ratio(timing)
    row.update({"change": judged["text"], "improved": judged["improved"], "verdict": judged["verdict"],
                "note": judged["note"]})


#: What each verdict of a paired timing looks like: the table cell's class and a word for the reader.
_VERDICTS = {
    "faster": ("better", "faster"),
    "regression": ("worse", "slower (regression)"),
    "noisy": ("uncertain", "noisy measurement"),
    "implausible": ("uncertain", "implausible: not a real speedup"),
    "no-change": ("uncertain", "no measurable change"),
    "simulated": ("uncertain", "no speedup: simulated quantization computes in float32"),
}


def latency_ratio(timing: dict) -> dict:
    """One paired timing's ratio as the page shows it: ``text`` ("2.00× (1.90–2.10)"), ``css`` (``better``
    only when confidently faster and neither noisy nor implausible, ``worse`` for a regression, else
    ``uncertain``: grey), ``improved`` (True / False / None), ``verdict``, ``word`` and ``note``."""
    verdict = timing.get("verdict") or "no-change"
    css, word = _VERDICTS.get(verdict, ("uncertain", verdict))
    ratio = timing.get("ratio")
    if ratio is None:
        text = "no speedup reported"
    else:
        value, low, high = (_number(ratio.get(k)) for k in ("value", "low", "high"))
        text = DASH if value is None else _times_text(value)
        if low is not None and high is not None:
            text += f" ({_sig(low)}\u2013{_sig(high)})"
        if verdict == "no-change":
            text = f"no measurable change, {text}"
    improved = True if verdict == "faster" else False if verdict == "regression" else None
    return {"text": text, "css": css, "improved": improved, "verdict": verdict, "word": word,
            "note": "; ".join(timing.get("notes") or [])}


def _spread_text(side: dict | None) -> dict:
    side = side or {}
    median, p10, p90 = (_number(side.get(k)) for k in ("median_ms", "p10_ms", "p90_ms"))
    return {"median": ms(median), "spread": (f"p10\u2013p90 {_sig(p10)}\u2013{_sig(p90)} ms"
                                             if p10 is not None and p90 is not None else ""),
            "rounds": side.get("rounds"), "value": median}


_RUNTIME_NAMES = {"pytorch-cpu": "PyTorch, CPU", "onnxruntime-cpu": "onnxruntime, CPU",
                  "pytorch-cuda": "PyTorch, GPU", "onnxruntime-cuda": "onnxruntime, GPU"}


def machine_text(machine: dict | None) -> str:
    """One line: "AMD EPYC, 2 logical cores (2 available), 2 threads, torch 2.4, onnxruntime 1.19, no GPU,
    load 0.50 -> 0.70"."""
    if not machine:
        return ""
    parts = [str(machine.get("cpu") or "unknown CPU"),
             f"{machine.get('logical_cores')} logical cores ({machine.get('available_cores')} available to the worker)",
             f"{machine.get('threads')} threads",
             f"torch {machine.get('torch')}", f"onnxruntime {machine.get('onnxruntime') or 'not installed'}",
             f"GPU {machine['gpu']}" if machine.get("gpu") else "no GPU",
             f"load average {machine.get('load_start')} at the start, {machine.get('load_end')} at the end"]
    return ", ".join(parts)


@register.simple_tag
def latency_table(latency) -> dict:
    """The job's paired latency timings for the page: one row per runtime, form and batch size (before and after
    with their spread and rounds, the ratio with its 95% interval, coloured by its verdict), the fastest runtime
    per batch size, the runtimes skipped and the machine."""
    latency = latency or {}
    rows = []
    for timing in latency.get("rows") or []:
        rows.append({"runtime": timing.get("runtime"), "runtime_name": _RUNTIME_NAMES.get(timing.get("runtime"),
                                                                                         timing.get("runtime")),
                     "form": timing.get("form"), "label": timing.get("label"), "batch": timing.get("batch"),
                     "before": _spread_text(timing.get("before")), "after": _spread_text(timing.get("after")),
                     "ratio": latency_ratio(timing), "flags": timing.get("flags") or [],
                     "notes": timing.get("notes") or [], "headline": bool(timing.get("headline"))})
    fastest = [{"batch": batch, "name": _RUNTIME_NAMES.get(best.get("runtime"), best.get("runtime")),
                "label": best.get("label"), "median": ms(best.get("median_ms"))}
               for batch, best in sorted((latency.get("fastest") or {}).items(), key=lambda kv: int(kv[0]))]
    return {"rows": rows, "fastest": fastest, "skipped": latency.get("skipped") or [],
            "machine": machine_text(latency.get("machine"))}


_FIDELITY = {
    "cosine_similarity": ("Cosine similarity of outputs", lambda v: DASH if _number(v) is None else f"{float(v):.4f}"),
    "top1_agreement": ("Top-1 agreement with the original", percent),
    "max_abs_diff": ("Largest absolute output difference", sig),
    "mean_abs_diff": ("Mean absolute output difference", sig),
}


@register.simple_tag
def fidelity_rows(metrics) -> list[dict]:
    fidelity = (metrics or {}).get("fidelity") or {}
    rows = []
    for key in list(_FIDELITY) + sorted(k for k in fidelity if k not in _FIDELITY):
        if key not in fidelity:
            continue
        label, fmt = _FIDELITY.get(key, (key.replace("_", " ").capitalize(), sig))
        rows.append({"key": key, "label": label, "value": fidelity[key], "text": fmt(fidelity[key])})
    return rows


# The pipeline's order of steps (jsonb in PostgreSQL does not keep it).
_TIMING_ORDER = ["load_s", "measure_before_s", "sensitivity_s", "compress_s", "speedup_s", "finetune_s",
                 "measure_after_s", "quantize_s", "measure_quantized_s", "measure_latency_s", "total_s"]


@register.simple_tag
def timing_rows(metrics) -> list[dict]:
    timings = (metrics or {}).get("timings") or {}
    return [
        {"key": key, "label": key.removesuffix("_s").replace("_", " ").capitalize(), "text": seconds(value)}
        for key, value in sorted(timings.items(), key=lambda kv: _TIMING_ORDER.index(kv[0])
                                 if kv[0] in _TIMING_ORDER else len(_TIMING_ORDER))
    ]


# -- the quantization section ----------------------------------------------------


def _times(reference, value) -> str:
    reference, value = _number(reference), _number(value)
    if reference is None or value is None or value <= 0:
        return ""
    return f"{reference / value:.2f}\u00d7"


_FORM_ORDER = ["float", "simulated", "int8_pytorch", "int8_onnx", "float16_gpu"]


def _paired_cell(latency, form_key: str, device: str, batch: int) -> dict | None:
    """The paired timing of a quantization form (``float`` in a chain: the pruned float model) against the
    original, on the runtime its column shows."""
    wanted = "compressed" if form_key == "float" else form_key
    for timing in (latency or {}).get("rows") or []:
        on_gpu = timing.get("runtime", "").endswith("cuda")
        if (timing.get("form") == wanted and int(timing.get("batch", 0)) == batch and on_gpu == (device == "gpu")
                and timing.get("ratio") is not None):
            if form_key != "int8_onnx" and timing.get("runtime", "").startswith("onnxruntime"):
                continue  # the float and PyTorch forms' columns hold their PyTorch figures
            return latency_ratio(timing)
    return None


@register.simple_tag
def quantization_table(quantization, latency=None) -> dict:
    """The forms of a quantized model side by side (accuracy, fidelity, size, latency) and the latency columns
    present (``[(device, batch)]``). Latency gains are the paired timings against the original on the same
    runtime (``latency``: ``metrics.latency``), coloured as the job's latency table; none without them."""
    forms = (quantization or {}).get("forms") or {}
    base = forms.get("float") or {}
    columns = sorted({(m["device"], int(m["batch"])) for form in forms.values() for key in form
                      if (m := _LATENCY.match(key))}, key=lambda c: (c[0] != "cpu", c[1]))
    rows = []
    # PostgreSQL's jsonb does not keep key order: the pipeline's order is restored here.
    for key in sorted(forms, key=lambda k: (_FORM_ORDER.index(k) if k in _FORM_ORDER else len(_FORM_ORDER), k)):
        form = forms[key]
        fidelity = form.get("fidelity") or {}
        accuracy, base_accuracy = _number(form.get("accuracy")), _number(base.get("accuracy"))
        row = {
            "key": key, "label": form.get("label", key),
            "accuracy": percent(form.get("accuracy")) if accuracy is not None else DASH,
            "accuracy_change": (f"{(accuracy - base_accuracy) * 100:+.1f} pts"
                                if key != "float" and accuracy is not None and base_accuracy is not None else ""),
            "cosine": _FIDELITY["cosine_similarity"][1](fidelity.get("cosine_similarity")),
            "top1": percent(fidelity.get("top1_agreement")),
            "size": bytes_(form.get("bytes")),
            "size_ratio": _times(base.get("bytes"), form.get("bytes")) if key != "float" else "",
            "latency": [],
        }
        for device, batch in columns:
            name = f"latency_{device}_b{batch}_ms"
            # A simulated model runs the float32 kernels: it never gets a speedup.
            paired = _paired_cell(latency, key, device, batch) if key != "simulated" else None
            row["latency"].append({"text": ms(form.get(name)), "value": form.get(name),
                                   "speedup": paired["text"] if paired else "",
                                   "css": paired["css"] if paired else "", "note": paired["note"] if paired else ""})
        rows.append(row)
    return {"rows": rows, "columns": [f"{d.upper()} b{b}" for d, b in columns]}
