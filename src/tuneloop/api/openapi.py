"""The OpenAPI document, true to what the server does: how to authenticate (a bearer key or the UI's session
cookie), and the errors each operation sends (400 for a bad request, never FastAPI's 422), all in one
error schema. `scripts/fuzz_api.py` and `tests/api/test_fuzz.py` fuzz the server against it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from tuneloop.api.errors import ErrorBody

SESSION_COOKIE = "tuneloop_session"
ERRORS = {400: "The request is invalid; `param` names the field.",
          401: "No API key or login, or a key that is not valid.",
          403: "This key or person may not do this.",
          404: "Something the request names does not exist.",
          409: "The request conflicts with the current state (a file in use, a name taken).",
          413: "The request body is over its limit: TUNELOOP_MAX_UPLOAD_BYTES for files, 16 MiB otherwise.",
          429: "Too many requests; try again later.",
          503: "Not ready: the database cannot be reached or its schema is not at the newest migration."}
PUBLIC = {"/health", "/ready"}


def _codes(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    if path == "/ready":
        return [503]
    if path in PUBLIC:
        return []
    codes = [400, 401, 403]
    has_body = "requestBody" in operation
    if "{" in path or has_body:
        codes.append(404)  # a job, file, project, model or record the request names
    if method in {"post", "delete", "put", "patch"}:
        codes.append(409)
    codes.append(413)  # the gate refuses any request whose declared body is over the limit
    return codes


def document(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorBody"] = error_schema
    components["securitySchemes"] = {
        "bearerKey": {"type": "http", "scheme": "bearer",
                      "description": "An API key from `tuneloop keys create` (serve prints the first one)."},
        "sessionCookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                          "description": "A login to the review UI: reads the API; writes to /api/projects "
                                         "(with the page's X-CSRF-Token)."}}
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for code in _codes(path, method, operation):
                responses[str(code)] = {"description": ERRORS[code], "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
            if path not in PUBLIC:
                operation["security"] = [{"bearerKey": []}, {"sessionCookie": []}]
    return schema


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
