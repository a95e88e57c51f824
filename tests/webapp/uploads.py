"""Assertions on uploads whose inspection refused them (the upload is stored, then inspected: see
webapp/common/intake.py)."""

from __future__ import annotations

from pathlib import Path


def assert_rejected(response, fragment: str) -> dict:
    """The upload was taken (201), inspected and rejected with a reason holding ``fragment``; returns the body."""
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "rejected", body
    assert fragment in body["status_reason"], body["status_reason"]
    return body


def stored_files(media_root) -> list[Path]:
    return sorted(p for p in Path(media_root).rglob("*") if p.is_file())
