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
