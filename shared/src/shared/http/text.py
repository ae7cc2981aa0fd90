"""JSON bodies holding text that UTF-8 cannot encode are refused before a route sees them.

JSON may carry a lone UTF-16 surrogate (`"\\ud800"`); Python decodes it into a str that no
MongoDB document, Kafka message or log line can then be written with. A route that stored or sent
such a reason or id failed with a 500, sometimes after it had acted. Every router's routes are
`TextCheckedRoute`s: such a body is 400 `invalid_text`, naming the field, and nothing happens.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

from shared.text import unencodable_at

INVALID_TEXT = "invalid_text"


class TextRefused(HTTPException):
    """A fastapi HTTPException: FastAPI lets it through its body parsing as it is."""

    code = INVALID_TEXT


class _CheckedRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            document = await super().json()
            where = unencodable_at(document)
            if where is not None:
                raise TextRefused(
                    400,
                    f"{where[:200]}: holds a lone UTF-16 surrogate, which UTF-8 cannot encode",
                )
        return self._json


class TextCheckedRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            return await handler(_CheckedRequest(request.scope, request.receive))

        return checked
