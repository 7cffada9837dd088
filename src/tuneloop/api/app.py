"""The app factory: the database engine, sessions and model cache are built here, per app."""

from __future__ import annotations

import time
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from tuneloop.api.deps import require_key
from tuneloop.config.settings import Settings
from tuneloop.models.registry import ModelError
from tuneloop.serve.cache import ModelCache
from tuneloop.services import ServiceError
from tuneloop.services.review.rounds import Tasks
from tuneloop.store.db import make_engine, sessions, upgrade
from tuneloop.web import pages

SESSION_DAYS = 14

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 409: "conflict_error", 422: "invalid_request_error", 429: "rate_limit_error"}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    headers = {"x-should-retry": "false"} if status < 500 else {}
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param,
                      "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class ServerTiming:
    """Adds `Server-Timing: app;dur=<ms>` (time until the response starts) to every HTTP response, so
    clients and benchmarks can see server time apart from the network."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                duration = (time.perf_counter() - started) * 1000
                message.setdefault("headers", []).append((b"server-timing", f"app;dur={duration:.2f}".encode()))
            await send(message)

        await self.app(scope, receive, timed_send)


def create_app(settings: Settings) -> FastAPI:
    from tuneloop.api.routes import native, openai_chat, openai_files, openai_fine_tuning, openai_models, projects

    engine = make_engine(settings.db_url)
    upgrade(engine)
    app = FastAPI(title="tuneloop", version="0.1.0", description="Fine-tune and serve models with people in the loop.")
    app.state.settings, app.state.engine, app.state.sessions = settings, engine, sessions(engine)
    app.state.models = ModelCache(settings)
    app.state.review_tasks = Tasks()
    app.add_middleware(SessionMiddleware, secret_key=settings.session_secret(), session_cookie="tuneloop_session",
                       max_age=SESSION_DAYS * 24 * 3600, same_site="lax")
    app.add_middleware(ServerTiming)
    app.add_exception_handler(pages.LoginRequired, pages.login_redirect)
    app.add_exception_handler(pages.PageError, pages.page_error)

    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, e: ServiceError) -> JSONResponse:
        return error_response(e.status, e.message, e.param, e.code)

    @app.exception_handler(ModelError)
    async def _model_error(_request: Request, e: ModelError) -> JSONResponse:
        return error_response(404, str(e), "model", "model_not_found")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, e: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
        return error_response(400, f"{where or 'request'}: {first['msg']}", where or None, "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail))

    secured = [Depends(require_key)]
    for module in (openai_files, openai_fine_tuning, openai_models, openai_chat):
        app.include_router(module.router, prefix="/v1", dependencies=secured)
    app.include_router(native.router, prefix="/api", dependencies=secured)
    app.include_router(projects.router, prefix="/api")  # people (session cookie) or API keys, checked per route
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    return app
