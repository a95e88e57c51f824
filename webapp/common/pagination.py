"""List pages with bounds: a huge ``limit`` or ``offset`` is capped or refused, never sent to the database."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

MAX_PAGE_SIZE = 200
MAX_OFFSET = 10**9


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """``?limit=`` is capped at :data:`MAX_PAGE_SIZE`; an ``?offset=`` past :data:`MAX_OFFSET` is a 400."""

    max_limit = MAX_PAGE_SIZE

    def get_offset(self, request):
        offset = super().get_offset(request)
        if offset > MAX_OFFSET:
            raise ValidationError({"offset": f"must be at most {MAX_OFFSET}"})
        return offset
