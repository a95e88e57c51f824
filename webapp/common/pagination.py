"""List pages with bounds: a huge ``limit`` is capped, a bad or huge ``offset`` or ``limit`` is a 400 naming it,
never sent to the database nor silently replaced by the default."""

from __future__ import annotations

import re

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

MAX_PAGE_SIZE = 200
MAX_OFFSET = 10**9


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """``?limit=`` (at least 1) is capped at :data:`MAX_PAGE_SIZE`; ``?offset=`` is 0 to :data:`MAX_OFFSET`.
    Anything else (``null``, ``-1``, ``1.5``, ``²``) is a 400 that names the parameter."""

    max_limit = MAX_PAGE_SIZE

    def get_limit(self, request):
        raw = request.query_params.get(self.limit_query_param)
        if raw is None:
            return self.default_limit
        return _whole_number(self.limit_query_param, raw, minimum=1, maximum=self.max_limit, cap=True)

    def get_offset(self, request):
        raw = request.query_params.get(self.offset_query_param)
        if raw is None:
            return 0
        return _whole_number(self.offset_query_param, raw, minimum=0, maximum=MAX_OFFSET)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = (f"Number of results to return per page (default {self.default_limit}; "
                                            f"more than {self.max_limit} returns {self.max_limit}).")
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"].update(minimum=0, maximum=MAX_OFFSET)
        return parameters


def _whole_number(name: str, raw: str, *, minimum: int, maximum: int, cap: bool = False) -> int:
    """``raw`` as an int in range; past ``maximum`` it is ``maximum`` when ``cap``, else a 400 naming ``name``."""
    # ASCII digits only: int() also takes "+5", " 5", "5_0" and "٥".
    if not re.fullmatch(r"[0-9]+", raw):
        raise ValidationError({name: f"must be a whole number of at least {minimum}, got {raw[:40]!r}"})
    # More digits than any bound here: not parsed (int() of thousands of digits is slow, then a ValueError).
    digits = raw.lstrip("0") or "0"
    value = int(digits) if len(digits) <= 18 else None
    if value is not None and value < minimum:
        raise ValidationError({name: f"must be at least {minimum}, got {value}"})
    if value is None or value > maximum:
        if cap:
            return maximum
        raise ValidationError({name: f"must be at most {maximum}"})
    return value
