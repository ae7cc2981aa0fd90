"""The outbox relay: commands recorded and never marked published go out again, owners oldest
first a page per pass, and a stored command that cannot be built holds back no other."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from structlog.testing import capture_logs

from ipn_gateway.adapters.memory import MemoryPayments, MemoryWithdrawals, RecordingPublisher
from ipn_gateway.application.relay import OutboxRelay
from ipn_gateway.application.withdrawals import WithdrawalHandler, WithdrawalPolicy
from ipn_gateway.domain.withdrawals import reference_id

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
POLICY = WithdrawalPolicy(
    fees={"BTC": Decimal("0.0001")},
    max_per_request={"BTC": Decimal("2")},
    daily_limit={"BTC": Decimal("3")},
)


class Rig:
    def __init__(self) -> None:
        self.now = NOW
        self.withdrawals, self.publisher = MemoryWithdrawals(), RecordingPublisher()
        self.handler = WithdrawalHandler(self.withdrawals, self.publisher, POLICY, lambda: self.now)

    async def unpublished(self, user_id: str, *, stored_as: str | None = None) -> str:
        """A withdrawal whose lock was recorded and never published (the broker was away), made a
        second after the last; with `stored_as`, its lock as an earlier version stored it, with a
        user id no command can carry (a token subject with a space). Its id."""
        self.now += timedelta(seconds=1)
        self.publisher.fail_next = 1
        made = await self.handler.request(
            user_id, "BTC", "0.1", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
        )
        stored = self.withdrawals.withdrawals[made.withdrawal_id]
        [entry] = stored.outbox
        assert not entry.published
        if stored_as is not None:
            command = entry.command.model_copy(update={"user_id": stored_as})
            outbox = (replace(entry, command=command),)
            self.withdrawals.withdrawals[made.withdrawal_id] = replace(stored, outbox=outbox)
        return made.withdrawal_id

    def relay(self, page: int = 500) -> OutboxRelay:
        outboxes = [self.withdrawals, MemoryPayments()]
        return OutboxRelay(
            outboxes, self.publisher, lambda: self.now + timedelta(minutes=1), page=page
        )


async def test_a_command_that_cannot_be_built_holds_back_no_other() -> None:
    """It stopped the pass (and the resend at start, so the gateway could not start) at that
    record on every run, over MongoDB reading it failed the whole page; it is logged and left,
    and the others go."""
    rig = Rig()
    broken = await rig.unpublished("old", stored_as="old user")
    good = await rig.unpublished("alice")
    with capture_logs() as logs:
        assert await rig.relay().run_once() == 1
    assert [c.reference_id for c in rig.publisher.published] == [reference_id(good)]
    [unsendable] = [e for e in logs if e["event"] == "outbox.command_unsendable"]
    assert (unsendable["owner"], unsendable["log_level"]) == (broken, "error")
    assert unsendable["reason"].startswith("invalid_field")
    assert not rig.withdrawals.withdrawals[broken].outbox[0].published
    assert rig.withdrawals.withdrawals[good].outbox[0].published


async def test_unsendable_records_do_not_take_every_pass() -> None:
    """A pass takes a page of owners, oldest first, and the next goes on after it: a page of
    records whose command cannot be built no longer keeps a newer one from ever being sent."""
    rig = Rig()
    for n in range(2):
        await rig.unpublished(f"old{n}", stored_as="old user")
    good = await rig.unpublished("alice")
    relay = rig.relay(page=2)
    assert await relay.run_once() == 0  # a full page of unsendable ones
    assert await relay.run_once() == 1  # on after it
    assert [c.reference_id for c in rig.publisher.published] == [reference_id(good)]
    assert await relay.run_once() == 0  # back to the start: only those again
