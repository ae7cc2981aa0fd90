"""`python -m <service>`: one service's HTTP server, its logging configured first."""

from __future__ import annotations

from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from shared.logging import configure_logging
from shared.settings import ServiceSettings


def serve[S: ServiceSettings](
    service: str, settings: S, create_app: Callable[[S], FastAPI], *, host: str, port: int
) -> None:
    """Configure logging, build the app (logging first: building it may log) and serve it until
    stopped; uvicorn's own logging and access log stay off (the app logs in JSON itself)."""
    configure_logging(service, level=settings.log_level)
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)
