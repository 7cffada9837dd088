"""The gate in front of every route: who is asking is settled before any route reads a byte of the body,
and a body over the size limit is refused from its Content-Length (or, when it has none, as soon as it
grows past the limit), so an anonymous client can make the server parse nothing and store nothing.

Roles (admin, reviewer, annotator; what a login may change) are still checked by each route's
dependencies; the gate only answers 401 for requests to the API that carry no valid credentials."""

from __future__ import annotations

from typing import Any

import anyio
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from tuneloop.api.errors import error_response
from tuneloop.store import repo
from tuneloop.store import review as review_store

API_PREFIXES = ("/v1/", "/api/")
"""Everything under these needs an API key or a login; pages redirect to /login on their own."""
UPLOADS = {"/v1/files", "/api/projects/upload"}
"""The routes that take files: up to TUNELOOP_MAX_UPLOAD_BYTES, with room for the form around the file."""
FORM_SLACK = 1 << 20
API_BODY_LIMIT = 16 << 20
"""Any other API request (a chat, a job, a project): 16 MiB of JSON is far beyond a sane one."""
PAGE_BODY_LIMIT = 64 << 10
"""The pages' own forms (logging in and out), which anyone may post to."""
AUTH_THREADS = anyio.CapacityLimiter(16)
"""The gate's database lookups run on threads of their own, so requests waiting for a model cannot starve it."""


def route_path(scope: dict) -> str:
    """The path the app routes on: without the prefix a proxy mounts the app under (`root_path`)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] or "/" if root and path.startswith(root) else path


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, upload: bool):
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes" +
                              (" (TUNELOOP_MAX_UPLOAD_BYTES and the form around the file)" if upload else
                               "; send files to POST /v1/files"))


class Gate:
    def __init__(self, app: Any, settings: Any, sessions: Any):
        self.app, self.sessions = app, sessions
        self.upload_limit = settings.max_upload_bytes + FORM_SLACK

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers, path = Headers(scope=scope), route_path(scope)
        if path.startswith(API_PREFIXES):
            found = await anyio.to_thread.run_sync(self._credential, path, headers.get("authorization"),
                                                     (scope.get("session") or {}).get("user_id"), limiter=AUTH_THREADS)
            if not isinstance(found, str):  # the 401 to send
                await found(scope, receive, send)
                return
            scope.setdefault("state", {})["credential"] = found  # the routes' role checks need not look again
        limit = self.upload_limit if path in UPLOADS else API_BODY_LIMIT if path.startswith(API_PREFIXES) \
            else PAGE_BODY_LIMIT
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await error_response(413, str(BodyTooLarge(limit, path in UPLOADS).detail), None, "request_too_large")(
                scope, receive, send)
            return
        await self.app(scope, self._counted(receive, limit, path in UPLOADS), send)

    def _credential(self, path: str, authorization: str | None, user_id: str | None) -> Any:
        """"key" or "login" when the request carries a valid key or a live login; else the 401 to send."""
        with self.sessions() as session:
            if authorization:
                scheme, _, secret = authorization.partition(" ")
                if scheme.lower() == "bearer" and secret.strip() and \
                        repo.find_active_key(session, secret=secret.strip()) is not None:
                    return "key"
                return error_response(401, "the API key is not valid or was revoked", None, "invalid_api_key")
            if user_id:
                user = review_store.get_user(session, user_id=user_id)
                if user is not None and user.disabled_at is None:
                    return "login"
        if path.startswith("/v1/"):
            return error_response(401, "no API key: send 'Authorization: Bearer <key>' (tuneloop keys create)",
                                  None, "missing_api_key")
        return error_response(401, "log in, or send 'Authorization: Bearer <key>'", None, "not_authenticated")

    @staticmethod
    def _counted(receive: Any, limit: int, upload: bool) -> Any:
        """A body without a Content-Length (chunked) is counted as it arrives and refused past the limit."""
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, upload)
            return message

        return counted
