"""Small inline SVG charts for the dashboard (no JavaScript library, nothing from a CDN).

Every chart draws its axes through :func:`axes`, so each axis has a title with its unit ("Sparsity of the
group (%)") and tick labels. Usage in a template::

    {% load condense_charts %}
    {% sensitivity_chart job.metrics.auto %}
    {% layer_chart job.layers %}
    {% training_chart job.metrics.finetune %}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from django import template
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import mark_safe

from webapp.jobs.runs import pareto_front

from .condense_format import count

register = template.Library()

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f", "#92400e",
           "#475569"]
WIDTH, HEIGHT = 560, 300
#: Room around the plotting area: tick labels and the axis titles sit in the left and bottom margins.
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 12, 48
AXIS_COLOUR, GRID_COLOUR, MUTED_COLOUR = "#94a3b8", "#e2e8f0", "#64748b"
FONT_SIZE, TITLE_SIZE = 12, 13


def _scale(value: float, low: float, high: float, start: float, end: float) -> float:
    if high == low:
        return (start + end) / 2
    return start + (value - low) / (high - low) * (end - start)


@dataclass(frozen=True)
class Frame:
    """The plotting area of one chart: the values its axes span and where it lies in the SVG.

    >>> frame = Frame(x_low=0, x_high=100, y_low=0, y_high=100)
    >>> frame.x(0), frame.y(100)
    (64.0, 12.0)
    """

    x_low: float
    x_high: float
    y_low: float
    y_high: float
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = RIGHT
    top: int = TOP
    bottom: int = BOTTOM

    def x(self, value: float) -> float:
        return _scale(value, self.x_low, self.x_high, self.left, self.width - self.right)

    def y(self, value: float) -> float:
        return _scale(value, self.y_low, self.y_high, self.height - self.bottom, self.top)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``low``..``high``: (0, 38) -> [0, 10, 20, 30, 40]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value < high + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


def tick_text(value: float) -> str:
    """A tick label without trailing zeros: 20.0 -> "20", 2.5 -> "2.5"."""
    return f"{value:.6g}"


def axes(frame: Frame, *, x_title: str, y_title: str, x_ticks: Iterable[tuple[float, str]],
         y_ticks: Iterable[tuple[float, str]], grid: bool = True) -> str:
    """SVG markup of a chart's two axes: the lines, the ticks (``(value, label)`` pairs in the frame's units,
    placed with ``frame.x`` / ``frame.y``), light grid lines across the plot at the y ticks, and the titles,
    which carry the unit: ``x_title="Sparsity of the group (%)"``, ``y_title="Accuracy (%)"``.

    The titles are ``<text class="axis-title" data-axis="x|y">`` (the y title turned upright along its axis).
    """
    bottom, top = frame.height - frame.bottom, frame.top
    left, right = frame.left, frame.width - frame.right
    parts = []
    for value, label in y_ticks:
        y = frame.y(value)
        if grid:
            parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="{GRID_COLOUR}"/>')
        parts.append(f'<text class="tick" data-axis="y" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="{FONT_SIZE}">{escape(label)}</text>')
    for value, label in x_ticks:
        x = frame.x(value)
        parts.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="{AXIS_COLOUR}"/>')
        parts.append(f'<text class="tick" data-axis="x" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" '
                     f'font-size="{FONT_SIZE}">{escape(label)}</text>')
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{AXIS_COLOUR}"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="{AXIS_COLOUR}"/>')
    parts.append(f'<text class="axis-title" data-axis="x" x="{(left + right) / 2:.1f}" y="{frame.height - 8}" '
                 f'text-anchor="middle" font-size="{TITLE_SIZE}">{escape(x_title)}</text>')
    middle = (top + bottom) / 2
    parts.append(f'<text class="axis-title" data-axis="y" x="14" y="{middle:.1f}" text-anchor="middle" '
                 f'font-size="{TITLE_SIZE}" transform="rotate(-90 14 {middle:.1f})">{escape(y_title)}</text>')
    return "".join(parts)


def chart_svg(chart_id: str, frame: Frame, label: str, parts: Sequence[str]) -> str:
    """The ``<svg class="chart">`` element around a chart's parts (``label``: what it shows, for screen
    readers), in a ``div.chart-frame`` that scrolls sideways on a phone rather than shrink the text to dust."""
    return (f'<div class="chart-frame"><svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {frame.width} '
            f'{frame.height}" role="img" aria-label="{escape(label)}">{"".join(parts)}</svg></div>')


def legend(labels: Iterable[tuple[str, str]]) -> str:
    """A ``<ul class="legend">`` of ``(colour, label)`` swatches."""
    items = format_html_join("", '<li><span class="swatch" style="background:{}"></span>{}</li>', labels)
    return format_html('<ul class="legend">{}</ul>', items)


def _finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


# -- the charts --------------------------------------------------------------------------------------------


@register.simple_tag
def sensitivity_chart(report) -> str:
    """The metric against sparsity, one line per group of layers, both in % (``report``: a job's
    ``metrics.sensitivity`` or ``metrics.auto``, with fractions)."""
    report = report or {}
    sparsities = report.get("sparsities") or []
    series = []
    for label, values in (report.get("sensitivity") or {}).items():
        points = [(s * 100, v * 100) for s, v in zip(sparsities, values)
                  if _finite(s) is not None and _finite(v) is not None]
        if points:
            series.append((label, points))
    if not series:
        return ""
    baseline = _finite(report.get("baseline_metric"))
    values = [v for _, points in series for _, v in points] + ([baseline * 100] if baseline is not None else [])
    y_ticks = nice_ticks(min(values), max(values))
    frame = Frame(x_low=0.0, x_high=100.0, y_low=y_ticks[0], y_high=y_ticks[-1])
    metric = str(report.get("metric") or "accuracy")
    parts = [axes(frame, x_title="Sparsity of the group (%)", y_title=f"{metric.capitalize()} (%)",
                  x_ticks=[(t, tick_text(t)) for t in (0, 25, 50, 75, 100)],
                  y_ticks=[(t, tick_text(t)) for t in y_ticks])]
    if baseline is not None:
        y = frame.y(baseline * 100)
        parts.append(f'<line class="baseline" x1="{frame.left}" y1="{y:.1f}" x2="{frame.width - frame.right}" '
                     f'y2="{y:.1f}" stroke="{MUTED_COLOUR}" stroke-dasharray="4 3"><title>unpruned: '
                     f'{baseline * 100:.1f} %</title></line>')
    for index, (label, points) in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        coords = " ".join(f"{frame.x(s):.1f},{frame.y(v):.1f}" for s, v in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}" '
                     f'data-group="{escape(label)}"><title>{escape(label)}</title></polyline>')
    svg = chart_svg("sensitivity-chart", frame, f"{metric.capitalize()} (%) against the sparsity of one group of "
                    "layers (%)", parts)
    return format_html("{}{}", mark_safe(svg), legend((PALETTE[i % len(PALETTE)], label)
                                                      for i, (label, _) in enumerate(series)))


#: Height of one layer's pair of bars in the per-layer chart, and the longest layer name shown whole.
LAYER_ROW, LAYER_NAME_CHARS = 22, 26
#: Right margin of the per-layer chart: room for the longest bar's label ("32.8 k → 16.4 k (50 %)").
LAYER_LABEL_ROOM = 150
BEFORE_COLOUR, AFTER_COLOUR = "#cbd5e1", "#2563eb"


def _short(name: str) -> str:
    return name if len(name) <= LAYER_NAME_CHARS else "\u2026" + name[-(LAYER_NAME_CHARS - 1):]


@register.simple_tag
def layer_chart(layers) -> str:
    """Parameters per layer before and after compression: one pair of horizontal bars per layer with
    weights (``layers``: a job's ``layers``), the x axis in the unit the largest layer needs."""
    rows = [(str(layer.get("name", "")), _finite(layer.get("params_before")), _finite(layer.get("params_after")))
            for layer in layers or [] if isinstance(layer, dict)]
    rows = [(name, before, after if after is not None else before) for name, before, after in rows
            if before is not None and before > 0]
    if not rows:
        return ""
    largest = max(max(before, after) for _, before, after in rows)
    divisor, unit = next((d, u) for d, u in ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands"), (1, "count"))
                         if largest >= d or d == 1)
    x_ticks = nice_ticks(0.0, largest / divisor)
    left = 16 + 7 * max(len(_short(name)) for name, _, _ in rows) + 8
    frame = Frame(x_low=0.0, x_high=x_ticks[-1], y_low=len(rows), y_high=0.0,
                  height=TOP + LAYER_ROW * len(rows) + BOTTOM, left=max(LEFT, left), right=LAYER_LABEL_ROOM)
    names = [(index + 0.5, _short(name)) for index, (name, _, _) in enumerate(rows)]
    parts = [axes(frame, x_title=f"Parameters per layer ({unit})", y_title="Layer",
                  x_ticks=[(t, tick_text(t)) for t in x_ticks], y_ticks=names, grid=False)]
    bar = (LAYER_ROW - 6) / 2
    for index, (name, before, after) in enumerate(rows):
        top = frame.y(index) + 3
        for offset, css, colour, value, word in ((0, "bar-before", BEFORE_COLOUR, before, "before"),
                                                 (bar, "bar-after", AFTER_COLOUR, after, "after")):
            parts.append(f'<rect class="{css}" data-layer="{escape(name)}" data-value="{value:g}" '
                         f'x="{frame.left}" y="{top + offset:.1f}" width="{frame.x(value / divisor) - frame.left:.1f}" '
                         f'height="{bar:.1f}" fill="{colour}"><title>{escape(name)} {word}: {value:,.0f} '
                         'parameters</title></rect>')
        # What the bars say in words, so that a layer too small to see still reads: "4.64 k → 1.17 k (25 %)".
        kept = f"{count(before)} \u2192 {count(after)} ({after / before:.0%})" if after != before else count(before)
        parts.append(f'<text class="bar-label" x="{frame.x(max(before, after) / divisor) + 4:.1f}" '
                     f'y="{top + bar + 4:.1f}" font-size="{FONT_SIZE}">{escape(kept)}</text>')
    svg = chart_svg("layer-chart", frame, f"Parameters per layer ({unit}), before and after", parts)
    return format_html("{}{}", mark_safe(svg), legend([(BEFORE_COLOUR, "before"), (AFTER_COLOUR, "after")]))


def _line_chart(chart_id: str, label: str, points: list[tuple[float, float]], *, x_title: str, y_title: str,
                colour: str, start: tuple[float, float] | None = None) -> str:
    """One series against the epoch: a line through ``circle.point`` markers (one per epoch), and ``start``
    (epoch 0, before training) as a hollow marker."""
    every = points + ([start] if start else [])
    y_ticks = nice_ticks(min(v for _, v in every), max(v for _, v in every))
    last = max(e for e, _ in every)
    x_ticks = [t for t in nice_ticks(0, last, min(int(last) + 1, 6)) if float(t).is_integer()]
    frame = Frame(x_low=0.0, x_high=max(last, x_ticks[-1], 1), y_low=y_ticks[0], y_high=y_ticks[-1])
    parts = [axes(frame, x_title=x_title, y_title=y_title, x_ticks=[(t, tick_text(t)) for t in x_ticks],
                  y_ticks=[(t, tick_text(t)) for t in y_ticks])]
    line = ([start] if start else []) + points
    coords = " ".join(f"{frame.x(e):.1f},{frame.y(v):.1f}" for e, v in line)
    parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
    if start:
        parts.append(f'<circle class="start" data-epoch="0" cx="{frame.x(start[0]):.1f}" cy="{frame.y(start[1]):.1f}" '
                     f'r="4" fill="#fff" stroke="{colour}" stroke-width="2"><title>before training: '
                     f'{tick_text(round(start[1], 4))}</title></circle>')
    for epoch, value in points:
        parts.append(f'<circle class="point" data-epoch="{epoch:g}" data-value="{value:g}" cx="{frame.x(epoch):.1f}" '
                     f'cy="{frame.y(value):.1f}" r="4" fill="{colour}"><title>epoch {epoch:g}: '
                     f'{tick_text(round(value, 4))}</title></circle>')
    return chart_svg(chart_id, frame, label, parts)


@register.simple_tag
def training_chart(training, x_title: str = "Epoch of fine-tuning") -> str:
    """A training curve, per epoch: ``training`` is a job's ``metrics.finetune`` (the metric after each epoch,
    in %, from the pruned model's at epoch 0, and the mean training loss) or ``metrics.quantization.training``
    (a quantization-aware training's loss). The first chart is ``svg#training-chart``; the loss, when the
    metric is drawn too, is a second one beside it, ``svg#loss-chart``."""
    training = training or {}
    history = [h for h in training.get("history") or [] if isinstance(h, dict)]
    values = [h.get("metric") for h in history] if history else list(training.get("per_epoch") or [])
    points = [(float(epoch), v * 100) for epoch, v in enumerate(values, start=1) if _finite(v) is not None]
    losses = [(float(h["epoch"]), float(h["loss"])) for h in history
              if _finite(h.get("epoch")) is not None and _finite(h.get("loss")) is not None]
    charts = []
    if points:
        metric = str(training.get("metric") or "accuracy").capitalize()
        pruned = _finite(training.get("pruned"))
        charts.append(_line_chart("training-chart", f"{metric} (%) after each epoch", points, x_title=x_title,
                                  y_title=f"{metric} (%)", colour=PALETTE[0],
                                  start=(0.0, pruned * 100) if pruned is not None else None))
    if losses:
        charts.append(_line_chart("loss-chart" if charts else "training-chart", "Mean training loss per epoch",
                                  losses, x_title=x_title, y_title="Training loss (mean per step)",
                                  colour=PALETTE[1]))
    return mark_safe(f'<div class="chart-pair">{"".join(charts)}</div>') if charts else ""


# -- the compare page's scatter charts ---------------------------------------------------------------------------

#: The scatter charts are taller than the others: two of them sit one above the other.
SCATTER_HEIGHT = 320


def _padded_ticks(values: list[float], cap: float | None = None) -> list[float]:
    """Round ticks spanning ``values`` with a little room around them, so no point sits on an axis; not past
    ``cap`` (100 for a percentage) when no value is."""
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.1 or 1.0
    ticks = nice_ticks(low - pad, high + pad)
    if cap is not None and high <= cap:
        ticks = [tick for tick in ticks if tick < cap] + [cap]
    return ticks


@register.simple_tag
def scatter_chart(chart_id: str, points, references, x_title: str, y_title: str, y_cap: float | None = None) -> str:
    """Jobs as points of y (higher is better) against x (lower is better), each job's original model as a
    ``.reference`` diamond, and the Pareto front (no other point is both lower and higher) as
    ``polyline.pareto-front`` through the ``.pareto`` points.

    ``points``: ``[{"id", "x", "y", "label"}]``, with ``x_low`` / ``x_high`` where x has an interval (drawn as
    an error bar); ``references``: ``[{"model", "x", "y", "label"}]``; points without an x or a y are left out.
    ``y_cap``: the y axis ends there when no point is above it (100 for a percentage).
    """
    points = [p for p in points if p.get("x") is not None and p.get("y") is not None]
    references = [r for r in references if r.get("x") is not None and r.get("y") is not None]
    if not points and not references:
        return format_html('<p class="hint" id="{}">No job here was measured on both axes yet.</p>', chart_id)
    keyed = [(p["id"], p["x"], p["y"]) for p in points] + [(f"reference-{r['model']}", r["x"], r["y"])
                                                           for r in references]
    front = pareto_front(keyed)
    on_front = set(front)
    where = {key: (x, y) for key, x, y in keyed}
    bars = [(p["id"], p["x_low"], p["x_high"], p["y"]) for p in points
            if p.get("x_low") is not None and p.get("x_high") is not None]
    x_ticks = _padded_ticks([x for _, x, _ in keyed] + [end for _, low, high, _ in bars for end in (low, high)])
    y_ticks = _padded_ticks([y for _, _, y in keyed], cap=y_cap)
    frame = Frame(x_low=x_ticks[0], x_high=x_ticks[-1], y_low=y_ticks[0], y_high=y_ticks[-1],
                  width=640, height=SCATTER_HEIGHT)
    parts = [axes(frame, x_title=x_title, y_title=y_title, x_ticks=[(t, tick_text(t)) for t in x_ticks],
                  y_ticks=[(t, tick_text(t)) for t in y_ticks])]
    if front:
        # A staircase: down to the x axis from the cheapest point, then a step to each next one, then across to
        # the right edge; everything below and to the right of it is beaten by a point of the front.
        first_x, first_y = where[front[0]]
        bottom, right = frame.height - frame.bottom, frame.width - frame.right
        steps = [(frame.x(first_x), bottom), (frame.x(first_x), frame.y(first_y))]
        for key in front[1:]:
            steps += [(frame.x(where[key][0]), steps[-1][1]), (frame.x(where[key][0]), frame.y(where[key][1]))]
        steps.append((right, steps[-1][1]))
        coords = " ".join(f"{sx:.1f},{sy:.1f}" for sx, sy in steps)
        parts.append(f'<polyline class="pareto-front" fill="none" stroke="#16a34a" stroke-width="1.5" '
                     f'stroke-dasharray="5 3" points="{coords}"><title>Pareto front</title></polyline>')
    for job_id, low, high, y in bars:
        parts.append(f'<line class="interval" data-job-id="{escape(job_id)}" x1="{frame.x(low):.1f}" '
                     f'y1="{frame.y(y):.1f}" x2="{frame.x(high):.1f}" y2="{frame.y(y):.1f}" stroke="{MUTED_COLOUR}" '
                     'stroke-width="1.5"/>')
    for ref in references:
        cx, cy = frame.x(ref["x"]), frame.y(ref["y"])
        css = "reference pareto" if f"reference-{ref['model']}" in on_front else "reference"
        parts.append(format_html(
            '<path class="{}" data-model-id="{}" d="M {} {} l 7 7 l -7 7 l -7 -7 z" fill="#475569">'
            '<title>{}</title></path>', css, ref["model"], f"{cx:.1f}", f"{cy - 7:.1f}", ref["label"]))
    for index, point in enumerate(points):
        css = "point pareto" if point["id"] in on_front else "point"
        parts.append(format_html(
            '<circle class="{}" data-job-id="{}" cx="{}" cy="{}" r="6" fill="{}" stroke="#1f2328" '
            'stroke-width="{}"><title>{}</title></circle>', css, point["id"], f"{frame.x(point['x']):.1f}",
            f"{frame.y(point['y']):.1f}", PALETTE[index % len(PALETTE)], 2 if point["id"] in on_front else 0.5,
            point["label"]))
    svg = chart_svg(chart_id, frame, f"{y_title} against {x_title}", parts)
    return mark_safe(svg.replace('class="chart"', 'class="chart scatter"', 1))
