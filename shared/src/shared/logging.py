"""Structured JSON logs (structlog) for every service, including the libraries' stdlib logs."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

# Tracebacks as data, without each frame's local variables (structlog's default shows them): a
# local can be a secret, a request's Authorization header or body, or an object that holds one
# (the IPN handler's HMAC key was written out by any 500 on the IPN route).
_DICT_TRACEBACKS: Final = structlog.processors.ExceptionRenderer(
    ExceptionDictTransformer(show_locals=False)
)


def configure_logging(
    service: str, *, level: str | int = "INFO", json: bool = True, stream: TextIO | None = None
) -> None:
    """One JSON object per line on ``stream`` (stderr by default) with ``service`` on each line.

    Lines from stdlib loggers (uvicorn, aiokafka, pymongo) go through the same processors, so the
    whole process speaks one format. ``json=False`` renders for a terminal instead.
    """

    def add_service(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        event.setdefault("service", service)
        return event

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_service,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _DICT_TRACEBACKS if json else structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial)
    return logger


@contextmanager
def log_context(
    *, reference_id: str | None = None, command_id: str | None = None, **extra: Any
) -> Iterator[None]:
    """Add ``reference_id`` / ``command_id`` (and ``extra``) to every line logged inside the block.

    Context variables, so concurrent tasks keep their own ids; ``None`` values are left out.
    """
    values = {"reference_id": reference_id, "command_id": command_id, **extra}
    with structlog.contextvars.bound_contextvars(
        **{key: value for key, value in values.items() if value is not None}
    ):
        yield
