"""Logs are JSON lines with the service name and the ids bound for the current task."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from shared.logging import configure_logging, get_logger, log_context


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    configure_logging("wallet", level="DEBUG", stream=buffer)
    yield buffer
    root.handlers[:], root.level = saved


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_structlog_and_stdlib_lines_are_json_with_the_service(stream: io.StringIO) -> None:
    get_logger("wallet.test").info("batch applied", commands=3)
    logging.getLogger("aiokafka.consumer").warning("rebalance %s", "started")
    ours, library = lines(stream)
    assert ours["event"] == "batch applied"
    assert ours["commands"] == 3
    assert ours["level"] == "info"
    assert ours["service"] == "wallet"
    assert ours["logger"] == "wallet.test"
    assert ours["timestamp"].endswith("Z")
    assert library["event"] == "rebalance started"
    assert library["level"] == "warning"
    assert library["service"] == "wallet"


def test_log_context_binds_ids_inside_the_block_only(stream: io.StringIO) -> None:
    log = get_logger("wallet.test")
    with log_context(reference_id="payment_12345", command_id="c-1", partition=2):
        log.info("applied")
        logging.getLogger("other").info("from stdlib")
    log.info("after")
    applied, stdlib_line, after = lines(stream)
    assert (applied["reference_id"], applied["command_id"], applied["partition"]) == (
        "payment_12345",
        "c-1",
        2,
    )
    assert stdlib_line["reference_id"] == "payment_12345"
    assert "reference_id" not in after


async def test_concurrent_tasks_keep_their_own_ids(stream: io.StringIO) -> None:
    log = get_logger("wallet.test")

    async def handle(reference_id: str) -> None:
        with log_context(reference_id=reference_id, command_id=None):
            await asyncio.sleep(0.01)
            log.info("handled")

    await asyncio.gather(handle("a"), handle("b"))
    # At DEBUG the event loop logs too: look at our lines only.
    handled = [line for line in lines(stream) if line["event"] == "handled"]
    assert sorted(line["reference_id"] for line in handled) == ["a", "b"]
    assert all("command_id" not in line for line in handled)


def test_exceptions_are_structured(stream: io.StringIO) -> None:
    try:
        raise ValueError("bad amount")
    except ValueError:
        get_logger("wallet.test").exception("rejected")
    (line,) = lines(stream)
    assert line["exception"][0]["exc_type"] == "ValueError"


def test_a_traceback_shows_no_local_variable(stream: io.StringIO) -> None:
    # A frame's locals held secrets: the IPN handler (its HMAC key), a request's headers.
    def verify(secret: str, authorization: str) -> None:
        raise RuntimeError("the database is away")

    try:
        verify("prod-IPN-hmac-secret-7f3a9c2e", "Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig")
    except RuntimeError:
        get_logger("gateway.test").exception("ipn_failed")
    (line,) = lines(stream)
    assert line["exception"][0]["exc_value"] == "the database is away"
    assert [frame["name"] for frame in line["exception"][0]["frames"]][-1] == "verify"
    text = stream.getvalue()
    assert "prod-IPN-hmac-secret" not in text
    assert "eyJhbGciOiJIUzI1NiJ9" not in text
