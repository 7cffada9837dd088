"""Every error the API sends has OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, whatever
raised it: a service, request validation, routing (404, 405), the gate (401, 413) or a bug (500)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount, compile_path

from tuneloop.models.registry import ModelError
from tuneloop.services import ServiceError
from tuneloop.services.validation import describe

log = logging.getLogger("tuneloop.api")

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
               413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """What every 4xx and 5xx answer carries."""

    error: ErrorDetail


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param,
                      "code": code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    sent = {**({"x-should-retry": "false"} if status < 500 else {}), **(headers or {})}
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=sent)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods of the routes for `path`: those of routes written exactly as the path when there are any
    (`/api/projects/upload`), else those of templates that match it (`/api/projects/{ref}`)."""
    exact: set[str] = set()
    templated: set[str] = set()
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, Mount):
            continue
        if context.path == path:
            exact |= set(context.methods or ())
        elif compile_path(context.path)[0].match(path):
            templated |= set(context.methods or ())
    return sorted((exact or templated) - {"HEAD"})


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, e: ServiceError) -> JSONResponse:
        return error_response(e.status, e.message, e.param, e.code)

    @app.exception_handler(ModelError)
    async def _model_error(_request: Request, e: ModelError) -> JSONResponse:
        return error_response(404, str(e), "model", "model_not_found")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, e: RequestValidationError) -> JSONResponse:
        message, param = describe(e.errors()[0])
        return error_response(400, message, param, "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        headers = dict(e.headers or {})
        if e.status_code == 405:  # every method of the path, not only those of the first route that matched it
            headers["Allow"] = ", ".join(allowed_methods(app, request.url.path))
            return error_response(405, f"{request.method} is not allowed here; use {headers['Allow']}",
                                  None, "method_not_allowed", headers)
        return error_response(e.status_code, str(e.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(500, f"internal server error ({type(e).__name__}); the server log has the details")
