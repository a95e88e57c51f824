"""JSON from users, with a bounded nesting depth: a deep document is a 400 naming the field, not a
RecursionError (a 500) or a parser stuck on a megabyte of brackets."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

#: Nesting allowed in a request body or a JSON form field (a recipe's params are 4-5 levels deep).
MAX_JSON_DEPTH = 32


class TooDeep(ValueError):
    pass


def json_depth_check(value: Any, limit: int = MAX_JSON_DEPTH) -> Any:
    """``value`` unchanged; raises :class:`TooDeep` when lists and dicts nest more than ``limit`` levels.

        >>> json_depth_check({"a": [1, 2]})
        {'a': [1, 2]}
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    raise TooDeep(f"nested deeper than {limit} levels")
                stack.append((child, depth + 1))
    return value


def loads_bounded(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that raises ``ValueError`` (never ``RecursionError``) for a document nested too deeply."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise TooDeep(f"nested deeper than {limit} levels") from None
    return json_depth_check(value, limit)


class BoundedJSONParser(JSONParser):
    """DRF's JSON body parser with the nesting bound, and Django's size bound (DATA_UPLOAD_MAX_MEMORY_SIZE,
    which DRF's parser does not apply: it reads the whole body into memory)."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and length and length.isdigit() and int(length) > limit:
            raise RequestDataTooBig(f"Request body exceeded {limit} bytes")
        try:
            return json_depth_check(super().parse(stream, media_type, parser_context))
        except RecursionError:
            raise ParseError(f"JSON parse error: the body is nested deeper than {MAX_JSON_DEPTH} levels") from None
        except TooDeep as exc:
            raise ParseError(f"JSON parse error: the body is {exc}") from None


class BoundedJSONField(serializers.JSONField):
    """A JSON field that also parses a JSON string (multipart forms), with the nesting bound."""

    def to_internal_value(self, data):
        try:
            if isinstance(data, str):
                data = loads_bounded(data) if data.strip() else data
            return json_depth_check(super().to_internal_value(data))
        except TooDeep as exc:
            raise serializers.ValidationError(str(exc)) from None
        except json.JSONDecodeError as exc:
            raise serializers.ValidationError(f"not valid JSON: {exc}") from None
