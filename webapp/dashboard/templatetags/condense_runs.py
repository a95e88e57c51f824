"""The runs table's cells: jobs as run rows (:func:`webapp.jobs.runs.job_run_row`) and the few words and colours
their figures need. static/runs.js writes the same texts when it updates a row.

Usage in a template::

    {% load condense_runs %}
    {% run_rows jobs as rows %}
    {{ row|latency_text }}  <span class="ratio {{ row.latency_verdict|verdict_css }}">
"""

from __future__ import annotations

import json

from django import template

from webapp.jobs.runs import job_run_row

from .condense_format import DASH, _sig, _times_text

register = template.Library()

#: A paired timing's verdict as the ratio's colour: green only when confidently faster, red for a regression,
#: grey for the rest (noisy, implausible, no change, simulated), as on the job's page.
_VERDICT_CSS = {"faster": "better", "regression": "worse"}


@register.simple_tag
def run_rows(jobs) -> list[dict]:
    return [job_run_row(job) for job in jobs]


@register.filter
def verdict_css(verdict) -> str:
    return _VERDICT_CSS.get(verdict, "uncertain") if verdict else ""


@register.filter
def latency_text(row: dict) -> str:
    """"1.40× (1.35–1.46)"; "no speedup reported" for a simulated quantizer; "—" when not timed."""
    if row.get("latency_verdict") is None:
        return DASH
    if row.get("latency_ratio") is None:
        return "no speedup reported"
    text = _times_text(row["latency_ratio"])
    if row.get("latency_low") is not None and row.get("latency_high") is not None:
        text += f" ({_sig(row['latency_low'])}\u2013{_sig(row['latency_high'])})"
    return text


@register.filter
def times(value) -> str:
    """A ratio: 2.087 -> "2.09×"."""
    return DASH if value is None else _times_text(value)


@register.filter
def points(delta) -> str:
    """An accuracy change as a fraction -> "+1.2 pts"."""
    return "" if delta is None else f"{delta * 100:+.1f} pts"


@register.filter
def json_value(value) -> str:
    """A parameter's value as the job's JSON has it: true, null, ["Conv2d"]."""
    return json.dumps(value)
