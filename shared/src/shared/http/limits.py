"""A cap on request bodies: every route reads its body whole, so without one a client could make a
service hold any amount of memory with one request. The largest body any route takes is a few
kilobytes (an IPN, an offer); 1 MiB leaves room and refuses the rest with 413 `body_too_large`.
"""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI, HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.http.errors import error_response

MAX_BODY_BYTES: Final = 1 << 20
BODY_TOO_LARGE: Final = "body_too_large"


class BodyTooLarge(HTTPException):
    """A fastapi HTTPException: raised while a route reads a body sent without a length."""

    code = BODY_TOO_LARGE


def _message(limit: int) -> str:
    return f"the request body is larger than {limit} bytes"


class BodyLimit:
    """Refuses a body declared longer than `limit` before reading any of it, and stops reading a
    body sent without a length (chunked) once it passes `limit`."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                response = error_response(400, "bad_request", "Content-Length is not a length")
                await response(scope, receive, send)
                return
            if length > self._limit:
                refusal = error_response(413, BODY_TOO_LARGE, _message(self._limit))
                await refusal(scope, receive, send)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._limit:
                    raise BodyTooLarge(413, _message(self._limit))
            return message

        await self._app(scope, counted, send)


def limit_request_bodies(app: FastAPI, limit: int = MAX_BODY_BYTES) -> None:
    app.add_middleware(BodyLimit, limit=limit)
