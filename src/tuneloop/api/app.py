"""The app factory: the database engine, sessions and model cache are built here, per app."""

from __future__ import annotations

import time
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from tuneloop.api import errors, openapi
from tuneloop.api.deps import require_key
from tuneloop.api.gate import Gate
from tuneloop.api.openapi import SESSION_COOKIE
from tuneloop.config.settings import Settings
from tuneloop.serve.cache import ModelCache
from tuneloop.models.embedding import TextEmbedder
from tuneloop.store.db import make_engine, schema_status, sessions, upgrade
from tuneloop.web import pages

SESSION_DAYS = 14


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
    from tuneloop.api.routes import (comparisons, native, openai_chat, openai_evals, openai_files,
                                     openai_fine_tuning, openai_graders, openai_models, projects)

    engine = make_engine(settings.db_url)
    upgrade(engine)
    app = FastAPI(title="tuneloop", version="0.1.0", description="Fine-tune and serve models with people in the loop.")
    app.state.settings, app.state.engine, app.state.sessions = settings, engine, sessions(engine)
    app.state.models = ModelCache(settings)
    app.state.embedder = TextEmbedder(settings)  # loads the encoder on first use (cosine graders)
    # The gate is the innermost middleware: it reads the session cookie that SessionMiddleware decoded.
    app.add_middleware(Gate, settings=settings, sessions=app.state.sessions)
    app.add_middleware(SessionMiddleware, secret_key=settings.session_secret(), session_cookie=SESSION_COOKIE,
                       max_age=SESSION_DAYS * 24 * 3600, same_site="lax")
    app.add_middleware(ServerTiming)
    app.add_exception_handler(pages.LoginRequired, pages.login_redirect)
    app.add_exception_handler(pages.PageError, pages.page_error)
    errors.install(app)

    @app.get("/health", tags=["deployment"])
    async def health() -> dict:
        """Liveness: the process answers (on the event loop itself, never behind a busy thread pool)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["deployment"], response_model=None)
    def ready() -> dict | JSONResponse:
        """Readiness: the database answers and its schema is at the newest migration."""
        try:
            current, head = schema_status(engine)
        except Exception as e:  # noqa: BLE001 - any driver error means "not ready"
            return errors.error_response(503, f"the database cannot be reached ({type(e).__name__})", None,
                                         "database_unreachable")
        if current != head:
            return errors.error_response(503, f"the database schema is at {current}, not {head}: restart "
                                              "`tuneloop serve` to migrate", None, "migrations_pending")
        return {"status": "ready", "database": engine.dialect.name, "revision": current}

    secured = [Depends(require_key)]
    for module in (openai_files, openai_fine_tuning, openai_graders, openai_models, openai_chat, openai_evals):
        app.include_router(module.router, prefix="/v1", dependencies=secured)
    app.include_router(native.router, prefix="/api", dependencies=secured)
    app.include_router(projects.router, prefix="/api")  # people (session cookie) or API keys, checked per route
    app.include_router(comparisons.router, prefix="/api")  # the same
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    openapi.install(app)
    return app
