"""A job as one row of plain values, read from its params and metrics: the runs table, the API's ``fields``, the
CSV/JSON export and the compare page all take their figures from :func:`job_run_row`, so they always agree.

Also here, for the compare page and endpoint: the original model as a reference point (:func:`reference_rows`),
the Pareto front (:func:`pareto_front`), the parameters flattened and diffed (:func:`params_diff`) and the channels
each layer kept (:func:`layer_channels`).

    >>> row = job_run_row(job)
    >>> row["sparsity"], row["accuracy_after"], row["latency_ratio"], row["size_after_bytes"]
    (0.5, 0.96, 1.4, 75152)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from statistics import median
from typing import Any

from .models import Job
from .selectors import job_elapsed_s, job_eta_s

#: Every key of a run row, with what it holds (the API documents them from here).
RUN_FIELDS: dict[str, str] = {
    "id": "the job's id",
    "name": "the job's name (empty: none given)",
    "model": "the model's id",
    "model_name": "the model's name",
    "algorithm": "the algorithm's name",
    "status": "queued | running | succeeded | failed | cancelled",
    "progress": "0 to 1",
    "stage": "what the run is doing now",
    "progress_detail": "where the run is within its stage, as the worker last reported it",
    "error": "why it failed (empty otherwise)",
    "tags": "the job's free labels",
    "created_at": "when it was created",
    "started_at": "when its last run started",
    "finished_at": "when it ended",
    "elapsed_s": "seconds its run has taken, to now while it runs (null before it starts)",
    "eta_s": "seconds left by the worker's estimate, while it runs (null: no estimate yet, or not running)",
    "duration_s": "seconds from start to end (null until it ends)",
    "sparsity": "the sparse ratio every config_list entry asks for (null: none, or entries differ)",
    "bits": "the quantization bit width every config_list entry asks for (null: none, or entries differ)",
    "target": 'the compression asked for in words: "50%", "8-bit", "50% + 8-bit", "mixed" (entries differ)',
    "accuracy_before": "the original model's accuracy on the dataset's test split (0 to 1; null: no labels)",
    "accuracy_after": "the compressed model's accuracy (0 to 1)",
    "accuracy_delta": "accuracy_after - accuracy_before (a fraction: -0.012 is 1.2 points lost)",
    "fidelity_top1": "share of inputs on which the compressed model's top class is the original's (0 to 1)",
    "fidelity_cosine": "cosine similarity of the compressed and original models' outputs",
    "params_before": "parameters of the original model",
    "params_after": "parameters of the compressed model",
    "params_ratio": "params_before / params_after",
    "flops_before": "MACs of the original model",
    "flops_after": "MACs of the compressed model",
    "size_before_bytes": "the original model's file size (safetensors)",
    "size_after_bytes": "the deployable file's size (safetensors; int8: TorchScript)",
    "size_ratio": "size_before_bytes / size_after_bytes",
    "latency_runtime": "the runtime of the headline timing, e.g. pytorch-cpu",
    "latency_batch": "the batch size of the headline timing",
    "latency_before_ms": "the original model's median latency on that runtime and batch",
    "latency_after_ms": "the compressed model's median latency, timed interleaved with the original",
    "latency_ratio": "latency_before / latency_after (above 1: faster)",
    "latency_low": "the ratio's 95% interval, low end",
    "latency_high": "the ratio's 95% interval, high end",
    "latency_verdict": "faster | no-change | noisy | implausible | regression | simulated",
    "latency_flags": "noisy, implausible, regression",
}


#: A list of job ids in a query string: "1,2,3".
ID_LIST_PATTERN = r"^[0-9]{1,12}(,[0-9]{1,12})*$"
#: At most this many jobs compared at once (and ids in one ``ids``).
MAX_IDS = 50


class RunQueryError(ValueError):
    """A bad query parameter of the runs table or API: ``name`` and what is wrong with it."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


def parse_ids(raw: str | None, name: str = "ids") -> list[int]:
    """``"3,1,2"`` -> ``[3, 1, 2]`` (duplicates dropped); anything else is a :class:`RunQueryError`."""
    if not raw or not re.fullmatch(ID_LIST_PATTERN, raw):
        raise RunQueryError(name, f"must be job ids separated by commas, e.g. 1,2,3; got {str(raw)[:40]!r}")
    ids = list(dict.fromkeys(int(part) for part in raw.split(",")))
    if len(ids) > MAX_IDS:
        raise RunQueryError(name, f"at most {MAX_IDS} jobs at once, got {len(ids)}")
    return ids


def parse_run_filters(query) -> dict[str, Any]:
    """The runs filters of a query string (``model``, ``algorithm``, ``status``, ``tag``, ``ids``), as keyword
    arguments of :func:`webapp.jobs.selectors.job_list_filtered`; a bad value is a :class:`RunQueryError`."""
    filters: dict[str, Any] = {}
    model = query.get("model")
    if model not in (None, ""):
        if not re.fullmatch(r"[0-9]{1,12}", model) or int(model) < 1:
            raise RunQueryError("model", f"must be a model id (a whole number from 1), got {model[:40]!r}")
        filters["model"] = int(model)
    for name in ("algorithm", "tag"):
        if query.get(name):
            filters[name] = query[name]
    status = query.get("status")
    if status:
        if status not in Job.Status.values:
            raise RunQueryError("status", f"must be one of {', '.join(Job.Status.values)}, got {status[:40]!r}")
        filters["status"] = status
    if query.get("ids") is not None:
        filters["ids"] = parse_ids(query.get("ids"))
    return filters


def parse_fields(raw: str | None, default: Sequence[str]) -> list[str]:
    """``"id,status,accuracy_after"`` -> the list (``default`` when not given); an unknown name is a
    :class:`RunQueryError` naming it and listing the valid ones."""
    if raw is None:
        return list(default)
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in RUN_FIELDS]
    if unknown or not names:
        what = f"unknown field {unknown[0][:40]!r}" if unknown else "no field named"
        raise RunQueryError("fields", f"{what}; valid fields: {', '.join(RUN_FIELDS)}")
    return list(dict.fromkeys(names))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _ratio(before: float | None, after: float | None) -> float | None:
    return before / after if before is not None and after else None


def _entry_bits(entry: dict) -> int | None | str:
    """An entry's bit width: an int, None (it quantizes nothing) or "mixed" (weight and input differ)."""
    bits = entry.get("quant_bits")
    if isinstance(bits, dict):
        widths = {value for value in bits.values() if isinstance(value, int)}
        return widths.pop() if len(widths) == 1 else ("mixed" if widths else None)
    return bits if isinstance(bits, int) and not isinstance(bits, bool) else None


def _uniform(values: list) -> tuple[Any, bool]:
    """The one value all of ``values`` share (None if empty), and whether they differ."""
    distinct = {repr(value): value for value in values}
    if len(distinct) == 1:
        value = next(iter(distinct.values()))
        return (None, True) if value == "mixed" else (value, False)
    return None, len(distinct) > 1


def _entries(params: dict) -> list[dict]:
    config = params.get("config_list") if isinstance(params, dict) else None
    # Entries that exclude layers say nothing about how much the others are compressed.
    return [e for e in config if isinstance(e, dict) and not e.get("exclude")] if isinstance(config, list) else []


def compression_target(params: dict) -> dict[str, Any]:
    """What the job's ``config_list`` asks for: ``{"sparsity", "bits", "target"}``.

    >>> compression_target({"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]})
    {'sparsity': 0.5, 'bits': None, 'target': '50%'}

    A prune-then-quantize job (``params.quantization``) gives both: "50% + 8-bit". Entries asking for different
    values give None and "mixed".
    """
    entries = _entries(params)
    ratios = [_number(e.get("sparse_ratio", e.get("sparsity"))) for e in entries]
    sparsity, mixed_sparsity = _uniform([r for r in ratios if r is not None])
    then = params.get("quantization") if isinstance(params, dict) else None
    quant_entries = _entries(then.get("params") or {}) if isinstance(then, dict) else entries
    bits, mixed_bits = _uniform([b for b in map(_entry_bits, quant_entries) if b is not None])
    words = []
    if mixed_sparsity or mixed_bits:
        words.append("mixed")
    else:
        if sparsity is not None:
            words.append(f"{sparsity * 100:.4g}%")
        if bits is not None:
            words.append(f"{bits}-bit")
    return {"sparsity": sparsity, "bits": bits, "target": " + ".join(words)}


def headline_timing(latency: dict | None) -> dict | None:
    """The paired timing a job's page headlines: its deliverable's (``headline``) on the CPU before the GPU,
    at the smallest batch (the first latency row of its before/after table)."""
    rows = [row for row in (latency or {}).get("rows") or [] if isinstance(row, dict) and row.get("headline")]
    if not rows:
        return None
    return min(rows, key=lambda row: (str(row.get("runtime", "")).endswith("cuda"), int(row.get("batch") or 0)))


def _latency_fields(latency: dict | None) -> dict[str, Any]:
    timing = headline_timing(latency)
    if timing is None:
        return {key: None for key in RUN_FIELDS if key.startswith("latency_")} | {"latency_flags": []}
    ratio = timing.get("ratio") or {}
    return {
        "latency_runtime": timing.get("runtime"), "latency_batch": timing.get("batch"),
        "latency_before_ms": _number((timing.get("before") or {}).get("median_ms")),
        "latency_after_ms": _number((timing.get("after") or {}).get("median_ms")),
        "latency_ratio": _number(ratio.get("value")), "latency_low": _number(ratio.get("low")),
        "latency_high": _number(ratio.get("high")), "latency_verdict": timing.get("verdict") or "no-change",
        "latency_flags": list(timing.get("flags") or []),
    }


def _size(side: dict) -> float | None:
    # The file the headline latency runs: safetensors (pruned) or TorchScript (int8); ONNX when that is all.
    return _number(side.get("weights_bytes")) or _number(side.get("onnx_bytes"))


def _duration(job: Job) -> float | None:
    if job.started_at and job.finished_at:
        return max((job.finished_at - job.started_at).total_seconds(), 0.0)
    return None


def job_run_row(job: Job) -> dict[str, Any]:
    """The job as plain values, keyed as :data:`RUN_FIELDS` (numbers None where the job did not measure them)."""
    metrics = job.metrics if isinstance(job.metrics, dict) else {}
    before = metrics.get("before") if isinstance(metrics.get("before"), dict) else {}
    after = metrics.get("after") if isinstance(metrics.get("after"), dict) else {}
    fidelity = metrics.get("fidelity") if isinstance(metrics.get("fidelity"), dict) else {}
    accuracy_before, accuracy_after = _number(before.get("accuracy")), _number(after.get("accuracy"))
    params_before, params_after = _number(before.get("params")), _number(after.get("params"))
    size_before, size_after = _size(before), _size(after)
    return {
        "id": job.pk, "name": job.name, "model": job.model_id, "model_name": job.model.name,
        "algorithm": job.algorithm, "status": job.status, "progress": job.progress, "stage": job.stage,
        "progress_detail": job.progress_detail if isinstance(job.progress_detail, dict) else {},
        "error": job.error, "tags": [str(tag) for tag in job.tags] if isinstance(job.tags, list) else [],
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
        "duration_s": _duration(job), "elapsed_s": job_elapsed_s(job=job), "eta_s": job_eta_s(job=job),
        **compression_target(job.params),
        "accuracy_before": accuracy_before, "accuracy_after": accuracy_after,
        "accuracy_delta": accuracy_after - accuracy_before if None not in (accuracy_before, accuracy_after) else None,
        "fidelity_top1": _number(fidelity.get("top1_agreement")),
        "fidelity_cosine": _number(fidelity.get("cosine_similarity")),
        "params_before": params_before, "params_after": params_after,
        "params_ratio": _ratio(params_before, params_after),
        "flops_before": _number(before.get("flops")), "flops_after": _number(after.get("flops")),
        "size_before_bytes": size_before, "size_after_bytes": size_after, "size_ratio": _ratio(size_before, size_after),
        **_latency_fields(metrics.get("latency")),
    }


def export_value(value: Any) -> Any:
    """A run row's value for a CSV cell: a time in ISO 8601, a list as its items separated by spaces (tags), a
    dict as JSON, anything else as it is."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return " ".join(map(str, value))
    return json.dumps(value) if isinstance(value, dict) else value


# -- compare -----------------------------------------------------------------------------


def quality(row: dict) -> tuple[float | None, str]:
    """The y of a job on the compare charts: its accuracy, or where it had no labelled data its top-1 agreement
    with the original; with which of the two it is ("accuracy" or "fidelity")."""
    if row.get("accuracy_after") is not None:
        return row["accuracy_after"], "accuracy"
    return row.get("fidelity_top1"), "fidelity"


def reference_rows(rows: Sequence[dict]) -> list[dict[str, Any]]:
    """The original model of each model among ``rows``, as one point: its accuracy (or 1.0, agreeing with
    itself, when its jobs had no labels), the median of its latencies timed by these jobs on their headline
    runtimes, its size and parameters."""
    references: dict[int, dict[str, Any]] = {}
    for row in rows:
        ref = references.setdefault(row["model"], {"model": row["model"], "model_name": row["model_name"],
                                                   "_latencies": [], "_accuracies": [], "size_bytes": None,
                                                   "params": None, "flops": None})
        if row.get("latency_before_ms") is not None:
            ref["_latencies"].append(row["latency_before_ms"])
        if row.get("accuracy_before") is not None:
            ref["_accuracies"].append(row["accuracy_before"])
        ref["size_bytes"] = ref["size_bytes"] or row.get("size_before_bytes")
        ref["params"] = ref["params"] or row.get("params_before")
        ref["flops"] = ref["flops"] or row.get("flops_before")
    result = []
    for ref in references.values():
        latencies, accuracies = ref.pop("_latencies"), ref.pop("_accuracies")
        ref["latency_ms"] = median(latencies) if latencies else None
        ref["accuracy"] = median(accuracies) if accuracies else None
        ref["quality"], ref["quality_kind"] = (ref["accuracy"], "accuracy") if accuracies else (1.0, "fidelity")
        result.append(ref)
    return result


def relative_latency(row: dict) -> float | None:
    """The compressed model's latency as a fraction of the original's on the headline runtime: 1 / the ratio
    timed interleaved with the original (the one figure of a job that other jobs' timings do not skew)."""
    ratio = row.get("latency_ratio")
    return 1.0 / ratio if ratio else None


def pareto_front(points: Iterable[tuple[Any, float, float]]) -> list[Any]:
    """The keys of the points no other point beats: lower or equal x (latency, size) and higher or equal y
    (accuracy), better in at least one. Ordered by x, then by y downwards.

    >>> pareto_front([("a", 1.0, 0.90), ("b", 2.0, 0.95), ("c", 2.5, 0.93), ("d", 1.0, 0.80)])
    ['a', 'b']
    """
    points = [(key, float(x), float(y)) for key, x, y in points]
    front = [
        (key, x, y) for key, x, y in points
        if not any(ox <= x and oy >= y and (ox < x or oy > y) for _, ox, oy in points)
    ]
    return [key for key, _, _ in sorted(front, key=lambda point: (point[1], -point[2]))]


def flatten_params(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested params as dotted keys: ``{"config_list": [{"sparse_ratio": 0.5}]}`` -> ``{"config_list.0.sparse_ratio":
    0.5}``. Lists of plain values (``op_types``) stay one value."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(flatten_params(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat or ({prefix: {}} if prefix else {})
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        flat = {}
        for index, inner in enumerate(value):
            flat.update(flatten_params(inner, f"{prefix}.{index}" if prefix else str(index)))
        return flat
    return {prefix: value}


def params_diff(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """One row per flattened parameter of any of ``jobs`` (the algorithm and dataset first): its value in each
    job, in order (None where a job has no such key), and whether they differ."""
    flats = [{"algorithm": job.algorithm, "dataset": job.dataset_upload.name if job.dataset_upload_id else job.dataset,
              "speedup": job.speedup, **flatten_params(job.params)} for job in jobs]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    rows = []
    for key in keys:
        values = [flat.get(key) for flat in flats]
        rows.append({"key": key, "values": values, "differs": len({repr(value) for value in values}) > 1})
    return rows


#: The attribute that counts a layer's channels, by the first one a layer's channels_before has.
_CHANNEL_KEYS = ("out_channels", "out_features", "num_features", "embed_dim", "num_heads", "hidden_size",
                 "normalized_shape")


def _channels(channels: dict | None) -> tuple[str, Any] | None:
    for key in _CHANNEL_KEYS:
        if isinstance(channels, dict) and key in channels:
            return key, channels[key]
    return None


def layer_channels(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """The layers of ``jobs`` (by name, in the first job's order), each with per job ``{"after", "before",
    "key"}`` (the channels it kept of how many) or None where that job has no such layer."""
    layers: dict[str, dict[str, Any]] = {}
    for index, job in enumerate(jobs):
        for layer in job.layers if isinstance(job.layers, list) else []:
            if not isinstance(layer, dict) or "name" not in layer:
                continue
            before = _channels(layer.get("channels_before"))
            after = (layer.get("channels_after") or {}).get(before[0]) if before else None
            entry = layers.setdefault(str(layer["name"]), {"name": str(layer["name"]), "type": layer.get("type", ""),
                                                           "jobs": [None] * len(jobs)})
            if before is not None:
                entry["jobs"][index] = {"key": before[0], "before": before[1], "after": after,
                                        "changed": after != before[1]}
    return [entry for entry in layers.values() if any(cell is not None for cell in entry["jobs"])]


def compare_runs(jobs: Sequence[Job]) -> dict[str, Any]:
    """Everything the compare page and endpoint show of ``jobs``: their run rows (with params), the original
    models, the Pareto-optimal job ids of accuracy against latency and against size, the diffed parameters and
    the channels each layer kept."""
    rows = [job_run_row(job) | {"params": job.params} for job in jobs]
    references = reference_rows(rows)
    pareto = {}
    # Latency is compared relative to each job's own original (its interleaved ratio; the original is 1.0):
    # absolute times measured minutes apart on a shared machine would rank the jobs by the machine's load.
    for name, job_x, ref_x in (("accuracy_latency", relative_latency, lambda ref: 1.0),
                               ("accuracy_size", lambda row: row["size_after_bytes"], lambda ref: ref["size_bytes"])):
        points = [(row["id"], job_x(row), quality(row)[0]) for row in rows
                  if job_x(row) is not None and quality(row)[0] is not None]
        points += [(f"reference-{ref['model']}", ref_x(ref), ref["quality"]) for ref in references
                   if ref_x(ref) is not None and ref["quality"] is not None]
        pareto[name] = [key for key in pareto_front(points) if isinstance(key, int)]
    return {"jobs": rows, "references": references, "pareto": pareto, "params_diff": params_diff(jobs),
            "layers": layer_channels(jobs)}
