"""The OpenAPI schema documents every error an operation can answer, with the body it comes with.

:class:`ApiAutoSchema` (``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]``) adds the errors every view shares (401,
403; 404 where the path names an object; 400, 413 and 415 where the request has a body or a query); a view
names its own (409, 429) with ``extend_schema(responses={..., 409: CONFLICT})``. Bodies are those of
:func:`webapp.common.exceptions.api_exception_handler`: ``{"detail": "..."}``, or for bad input each field
that is wrong with its messages.
"""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="what went wrong, in one sentence")


class ValidationErrorSerializer(serializers.Serializer):
    """Each field that is wrong maps to a list of messages (an object of them for a nested field); an error
    that is not one field's is under ``detail`` (or ``non_field_errors``)."""

    detail = serializers.CharField(required=False, help_text="what is wrong, when it is not one field")


BAD_REQUEST = OpenApiResponse(ValidationErrorSerializer, description="Bad input: the body names the field and "
                              "says what is wrong; nothing was created or changed.")
UNAUTHORIZED = OpenApiResponse(ErrorSerializer, description="No valid credentials: send `Authorization: Token <key>` "
                               "(POST /api/v1/auth/token/) or sign in.")
FORBIDDEN = OpenApiResponse(ErrorSerializer, description="Not allowed (a signed-in session's write without its CSRF "
                            "token).")
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such object among yours (the id in the path, or one "
                           "the body names).")
CONFLICT = OpenApiResponse(ErrorSerializer, description="The object's state forbids it (e.g. a running job, a model "
                           "or dataset that jobs use); the detail says what to do first.")
TOO_LARGE = OpenApiResponse(ErrorSerializer, description="The request body is larger than the server accepts: "
                            "uploaded files over CONDENSE_MAX_UPLOAD_BYTES (cut off while they are read), or a JSON "
                            "body or form fields over 10 MiB.")
UNSUPPORTED_MEDIA_TYPE = OpenApiResponse(ErrorSerializer, description="A body in a content type this operation "
                                         "does not take.")
THROTTLED = OpenApiResponse(ErrorSerializer, description="Too many tries from this address; the detail and the "
                            "Retry-After header say when to try again.")


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's schema, with the error responses every operation shares."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, response in self._shared_errors():
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(response, str(code), direction=direction)
        return responses

    def _shared_errors(self) -> list[tuple[int, OpenApiResponse]]:
        parameters = self._get_parameters()
        has_body = self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None
        errors = []
        if has_body or any(parameter["in"] == "query" for parameter in parameters):
            errors.append((400, BAD_REQUEST))
        errors += [(401, UNAUTHORIZED), (403, FORBIDDEN)]
        if any(parameter["in"] == "path" for parameter in parameters):
            errors.append((404, NOT_FOUND))
        if has_body:
            errors += [(413, TOO_LARGE), (415, UNSUPPORTED_MEDIA_TYPE)]
        return errors


def inline_one_value_enums(result, generator, request, public):
    """A postprocessing hook (after drf-spectacular's enum hook): a one-value enum (``source`` in each shape
    of ``POST /models/``) is written in place, not as a ``$ref`` to a component of its own. Same meaning;
    schema-driven generators (schemathesis) cannot build ``oneOf`` branches whose enum is a ``$ref``."""
    schemas = result.get("components", {}).get("schemas", {})
    inlined = set()
    for schema in schemas.values():
        for name, prop in list(schema.get("properties", {}).items()):
            target = prop.get("$ref", "").rpartition("/")[2]
            if target in schemas and len(schemas[target].get("enum", ())) == 1:
                schema["properties"][name] = dict(schemas[target])
                inlined.add(target)
    for target in inlined:
        del schemas[target]
    return result
