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
FORM_SLACK = 1 << 20
"""Room for a multipart upload's boundaries and form fields beside a file of the largest allowed size."""


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes "
                              "(TUNELOOP_MAX_UPLOAD_BYTES)")


class Gate:
    def __init__(self, app: Any, settings: Any, sessions: Any):
        self.app, self.sessions = app, sessions
        self.limit = settings.max_upload_bytes + FORM_SLACK

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["path"].startswith(API_PREFIXES):
            refusal = await anyio.to_thread.run_sync(self._refusal, scope["path"], headers.get("authorization"),
                                                     (scope.get("session") or {}).get("user_id"))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await error_response(413, str(BodyTooLarge(self.limit).detail), None, "request_too_large")(
                scope, receive, send)
            return
        await self.app(scope, self._counted(receive), send)

    def _refusal(self, path: str, authorization: str | None, user_id: str | None) -> Any:
        """None when the request carries a valid key or a live login; else the 401 to send."""
        with self.sessions() as session:
            if authorization:
                scheme, _, secret = authorization.partition(" ")
                if scheme.lower() == "bearer" and secret.strip() and \
                        repo.find_active_key(session, secret=secret.strip()) is not None:
                    return None
                return error_response(401, "the API key is not valid or was revoked", None, "invalid_api_key")
            if user_id:
                user = review_store.get_user(session, user_id=user_id)
                if user is not None and user.disabled_at is None:
                    return None
        if path.startswith("/v1/"):
            return error_response(401, "no API key: send 'Authorization: Bearer <key>' (tuneloop keys create)",
                                  None, "missing_api_key")
        return error_response(401, "log in, or send 'Authorization: Bearer <key>'", None, "not_authenticated")

    def _counted(self, receive: Any) -> Any:
        """A body without a Content-Length (chunked) is counted as it arrives and refused past the limit."""
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        return counted
