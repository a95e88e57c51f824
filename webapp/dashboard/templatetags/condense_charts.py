"""Small inline SVG charts for the dashboard (no JavaScript library needed).

Usage in a template::

    {% load condense_charts %}
    {% sensitivity_chart job.metrics.auto %}
"""

from __future__ import annotations

from django import template
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import mark_safe

register = template.Library()

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f", "#92400e",
           "#475569"]
WIDTH, HEIGHT = 640, 280
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 32


def _scale(value: float, low: float, high: float, start: float, end: float) -> float:
    if high == low:
        return (start + end) / 2
    return start + (value - low) / (high - low) * (end - start)


@register.simple_tag
def sensitivity_chart(report) -> str:
    """Metric against sparsity, one line per group of layers (``report``: a job's ``metrics.auto``)."""
    report = report or {}
    sparsities = report.get("sparsities") or []
    series = []
    for label, values in (report.get("sensitivity") or {}).items():
        points = [(s, v) for s, v in zip(sparsities, values) if v is not None]
        if points:
            series.append((label, points))
    if not series:
        return ""
    baseline = report.get("baseline_metric")
    values = [v for _, points in series for _, v in points] + ([baseline] if baseline is not None else [])
    low, high = min(values), max(values)
    x = lambda s: _scale(s, 0.0, 1.0, LEFT, WIDTH - RIGHT)  # noqa: E731
    y = lambda v: _scale(v, low, high, HEIGHT - BOTTOM, TOP)  # noqa: E731

    parts = [f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" stroke="#94a3b8"/>',
             f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#94a3b8"/>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{x(tick):.1f}" y="{HEIGHT - 10}" text-anchor="middle" font-size="11">'
                     f'{tick:.0%}</text>')
    for value in (low, (low + high) / 2, high):
        parts.append(f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="11">'
                     f'{value:.2f}</text>')
    if baseline is not None:
        parts.append(f'<line x1="{LEFT}" y1="{y(baseline):.1f}" x2="{WIDTH - RIGHT}" y2="{y(baseline):.1f}" '
                     'stroke="#64748b" stroke-dasharray="4 3"><title>unpruned</title></line>')
    for index, (label, points) in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        coords = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}" '
                     f'data-group="{escape(label)}"><title>{escape(label)}</title></polyline>')
    svg = (f'<svg class="chart" id="sensitivity-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="Metric against sparsity, per group of layers">{"".join(parts)}</svg>')
    legend = format_html_join(
        "", '<li><span class="swatch" style="background:{}"></span>{}</li>',
        ((PALETTE[i % len(PALETTE)], label) for i, (label, _) in enumerate(series)),
    )
    return format_html('{}<ul class="legend">{}</ul>', mark_safe(svg), legend)


# -- the compare page's scatter charts ------------------------------------------------------

SCATTER_WIDTH, SCATTER_HEIGHT = 640, 320
SCATTER_LEFT, SCATTER_RIGHT, SCATTER_TOP, SCATTER_BOTTOM = 64, 16, 16, 52


def _tick_text(value: float) -> str:
    return f"{value:.3g}"


def _padded(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.1 or 1.0
    return low - pad, high + pad


@register.simple_tag
def scatter_chart(chart_id: str, points, references, x_title: str, y_title: str) -> str:
    """Jobs as points of y (higher is better) against x (lower is better), each job's original model as a
    ``.reference`` diamond, and the Pareto front (no other point is both lower and higher) as
    ``polyline.pareto-front`` through the ``.pareto`` points.

    ``points``: ``[{"id", "x", "y", "label"}]``; ``references``: ``[{"model", "x", "y", "label"}]``; points
    without an x or a y are left out.
    """
    # Imported here so that the charts above keep their own module head; the front is the compare endpoint's.
    from webapp.jobs.runs import pareto_front

    points = [p for p in points if p.get("x") is not None and p.get("y") is not None]
    references = [r for r in references if r.get("x") is not None and r.get("y") is not None]
    if not points and not references:
        return format_html('<p class="hint" id="{}">No job here was measured on both axes yet.</p>', chart_id)
    keyed = [(p["id"], p["x"], p["y"]) for p in points] + [(f"reference-{r['model']}", r["x"], r["y"])
                                                           for r in references]
    front = pareto_front(keyed)
    on_front = set(front)
    where = {key: (x, y) for key, x, y in keyed}
    x_low, x_high = _padded([x for _, x, _ in keyed])
    y_low, y_high = _padded([y for _, _, y in keyed])
    left, right = SCATTER_LEFT, SCATTER_WIDTH - SCATTER_RIGHT
    top, bottom = SCATTER_TOP, SCATTER_HEIGHT - SCATTER_BOTTOM
    x = lambda v: _scale(v, x_low, x_high, left, right)  # noqa: E731
    y = lambda v: _scale(v, y_low, y_high, bottom, top)  # noqa: E731

    parts = [f'<line class="axis" x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#94a3b8"/>',
             f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#94a3b8"/>']
    for step in range(5):
        xv = x_low + (x_high - x_low) * step / 4
        yv = y_low + (y_high - y_low) * step / 4
        parts.append(f'<text x="{x(xv):.1f}" y="{bottom + 16}" text-anchor="middle" font-size="11">'
                     f'{_tick_text(xv)}</text>')
        parts.append(f'<text x="{left - 6}" y="{y(yv) + 4:.1f}" text-anchor="end" font-size="11">'
                     f'{_tick_text(yv)}</text>')
    parts.append(format_html('<text class="axis-title x-title" x="{}" y="{}" text-anchor="middle" font-size="12">'
                             '{}</text>', (left + right) // 2, SCATTER_HEIGHT - 8, x_title))
    parts.append(format_html('<text class="axis-title y-title" x="14" y="{}" text-anchor="middle" font-size="12" '
                             'transform="rotate(-90 14 {})">{}</text>', (top + bottom) // 2, (top + bottom) // 2,
                             y_title))
    if front:
        # A staircase: down to the x axis from the cheapest point, then a step to each next one, then across to
        # the right edge; everything below and to the right of it is beaten by a point of the front.
        first_x, first_y = where[front[0]]
        steps = [(x(first_x), bottom), (x(first_x), y(first_y))]
        for key in front[1:]:
            steps += [(x(where[key][0]), steps[-1][1]), (x(where[key][0]), y(where[key][1]))]
        steps.append((right, steps[-1][1]))
        coords = " ".join(f"{sx:.1f},{sy:.1f}" for sx, sy in steps)
        parts.append(f'<polyline class="pareto-front" fill="none" stroke="#16a34a" stroke-width="1.5" '
                     f'stroke-dasharray="5 3" points="{coords}"><title>Pareto front</title></polyline>')
    for ref in references:
        cx, cy = x(ref["x"]), y(ref["y"])
        css = "reference pareto" if f"reference-{ref['model']}" in on_front else "reference"
        parts.append(format_html(
            '<path class="{}" data-model-id="{}" d="M {} {} l 7 7 l -7 7 l -7 -7 z" fill="#475569">'
            '<title>{}</title></path>', css, ref["model"], f"{cx:.1f}", f"{cy - 7:.1f}", ref["label"]))
    for index, point in enumerate(points):
        css = "point pareto" if point["id"] in on_front else "point"
        parts.append(format_html(
            '<circle class="{}" data-job-id="{}" cx="{}" cy="{}" r="6" fill="{}" stroke="#1f2328" '
            'stroke-width="{}"><title>{}</title></circle>', css, point["id"], f"{x(point['x']):.1f}",
            f"{y(point['y']):.1f}", PALETTE[index % len(PALETTE)], 2 if point["id"] in on_front else 0.5,
            point["label"]))
    return mark_safe(f'<svg class="chart scatter" id="{escape(chart_id)}" viewBox="0 0 {SCATTER_WIDTH} '
                     f'{SCATTER_HEIGHT}" role="img" aria-label="{escape(y_title)} against {escape(x_title)}">'
                     f'{"".join(parts)}</svg>')
