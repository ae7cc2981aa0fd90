"""`wallet dead-letters` on the embedded broker: the newest letters of every partition of
wallet.commands.dlq, why each was refused and where it came from, a record that is no letter shown
as it is, and nothing committed for anyone."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from shared.messaging import DeadLetter
from shared.messaging.topics import Topics
from wallet.entrypoints import cli

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def letter(minute: int, reason: str, key: str) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=f"{reason} detail",
        raw_value='{"type": "credit", "amount": "NaN"}' + " " * minute,
        key=key,
        source_topic="wallet.commands",
        source_partition=minute % 3,
        source_offset=100 + minute,
        failed_at=T0 + timedelta(minutes=minute),
    )


async def invoke(bootstrap: str, topics: Topics, *args: str) -> tuple[int, str]:
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC_PREFIX": topics.prefix}
    # The command runs its own event loop: in a thread of its own, beside the test's.
    result = await asyncio.to_thread(CliRunner().invoke, cli.app, ["dead-letters", *args], env=env)
    return result.exit_code, result.output


async def test_the_newest_dead_letters_are_shown_with_why_and_where_from(
    kafka_bootstrap_servers: str, kafka_topics: Topics
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers)
    await producer.start()
    try:
        # Keys spread them over partitions; written out of order of their time.
        for minute, reason, key in [
            (3, "invalid_amount", "carol"),
            (1, "unreadable_json", "alice"),
            (2, "invalid_field", "bob"),
        ]:
            value = letter(minute, reason, key).model_dump_json().encode()
            await producer.send_and_wait(kafka_topics.dead_letters, value, key=key.encode())
        await producer.send_and_wait(kafka_topics.dead_letters, b"\xffnot json", key=b"dave")
    finally:
        await producer.stop()

    code, output = await invoke(kafka_bootstrap_servers, kafka_topics, "--last", "2")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[-1] == f"4 dead letter(s) on {kafka_topics.dead_letters}, the newest 2 above"
    shown = [line.split("] ", 1)[1] for line in lines if line.startswith("[")]
    assert shown == [
        "2026-12-01T09:02:00+00:00 invalid_field: invalid_field detail",
        "2026-12-01T09:03:00+00:00 invalid_amount: invalid_amount detail",
    ]
    assert "  from wallet.commands partition 0 offset 103, key 'carol'" in lines

    code, output = await invoke(kafka_bootstrap_servers, kafka_topics, "--json")
    assert code == 0, output
    every = [json.loads(line) for line in output.splitlines()]
    assert [e.get("reason") for e in every] == [
        None,
        "unreadable_json",
        "invalid_field",
        "invalid_amount",
    ]
    assert every[0]["text"] == "\\xffnot json"  # not a letter: shown, never skipped
    assert every[3]["source_offset"] == 103
    assert every[3]["raw_value"].startswith('{"type": "credit", "amount": "NaN"}')
    assert {e["dlq_partition"] for e in every} <= set(range(6))

    # Read again: the same (no group, nothing committed, nothing consumed away).
    assert (await invoke(kafka_bootstrap_servers, kafka_topics, "--json"))[1] == output


async def test_a_deployment_without_the_topic_is_told_so(kafka_bootstrap_servers: str) -> None:
    code, output = await invoke(kafka_bootstrap_servers, Topics(prefix="nowhere.4c1d."))
    assert code == 1
    assert "no topic nowhere.4c1d.wallet.commands.dlq" in output
