"""WalletClient: the seed's wallet-service API, as a client that publishes commands over Kafka.

    async with WalletClient(bootstrap_servers) as wallet:
        result = await wallet.credit(user_id="user123", currency="BTC", amount="0.01",
                                     transaction_type="deposit_nowpayments",
                                     reference_id="payment_12345", metadata={"order_id": "..."})

Each call publishes one command to `wallet.commands` (key: the payer) and, unless `wait=False`,
waits for its outcome on `wallet.results`. A timeout does not mean the command failed: it may still
be applied, which is safe because the wallet applies each idempotency key once; send it again with
the same reference_id to learn the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from types import TracebackType
from typing import Final, Self

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import JsonValue, ValidationError

from shared.messaging import (
    CommandResult,
    CreditCommand,
    DebitCommand,
    ExchangeCommand,
    LockCommand,
    ReleaseLockedCommand,
    SavingsInCommand,
    SavingsOutCommand,
    SettleTradeCommand,
    TransferCommand,
    TransferLockedCommand,
    UnlockCommand,
    WalletCommand,
    encode,
)
from shared.messaging.topics import (
    CONTRACT_TOPICS,
    PRODUCER_HEADER,
    PRODUCER_HEADER_MAX_BYTES,
    Topics,
    usable_producer,
)

Amount = Decimal | str
Metadata = dict[str, JsonValue] | None

log = structlog.get_logger(__name__)


class WalletTimeout(TimeoutError):
    """No result arrived in time; the command may still be applied (idempotently) later."""


# How many times in all a sender that waits for its own answer sends a command the wallet
# answers `processing_failed` (`send_until_final`).
UNRECORDED_REFUSAL_TRIES: Final = 3


async def send_until_final(
    send: Callable[[], Awaitable[CommandResult | None]],
    *,
    event: str,
    pause: float,
    tries: int = UNRECORDED_REFUSAL_TRIES,
) -> CommandResult | None:
    """The answer to `send` (a command sent, its answer awaited), sent again while the wallet
    answers it with a refusal that is not final (`CommandResult.final`: it failed on the command
    and recorded no outcome, so the same command may still apply), `tries` times in all, pausing
    `pause` × the try's number between tries, each logged as `event` (a warning). The last
    answer, final or not: the caller takes a not-final one as the refusal it says, so that
    nothing waits for good on a command the wallet fails on every time. Errors (`WalletTimeout`,
    the broker's) propagate."""
    attempt = 1
    while True:
        result = await send()
        if result is None or result.final or attempt >= tries:
            return result
        log.warning(event, reference=result.reference_id, attempt=attempt)
        await asyncio.sleep(pause * attempt)
        attempt += 1


class WalletClient:
    """Publishes wallet commands and, on request, waits for their results.

    The results listener reads every partition of `wallet.results` from the end, without a
    consumer group: starting costs no group join. Every command carries the `producer` header
    (`producer`, by default a name unique to this client; give a service's name to trace its
    commands), the wallet copies it onto the result, and the listener skips results naming another
    producer before decoding them. Results without the header (a wallet from before it) are decoded
    and matched by command_id as before.
    """

    # After a failure of the results listener (a broker error), it reads on from where it was.
    listener_retry_seconds: float = 1.0

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        timeout: float = 10.0,
        topics: Topics = CONTRACT_TOPICS,
        producer: str | None = None,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._topics = topics
        self._timeout = timeout
        self.producer = producer or f"wallet-client-{uuid.uuid4().hex[:12]}"
        if usable_producer(self.producer.encode()) is None:
            # The wallet would answer without the header, and this client would wait in vain.
            raise ValueError(
                f"a producer name is 1 to {PRODUCER_HEADER_MAX_BYTES} printable ASCII characters"
            )
        self._producer_header = [(PRODUCER_HEADER, self.producer.encode())]
        self.results_decoded = 0  # how many results this client decoded (others' are skipped)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._listener: asyncio.Task[None] | None = None
        # One future per command_id, shared by every caller waiting for it, with their count.
        self._waiting: dict[str, asyncio.Future[CommandResult]] = {}
        self._waiters: dict[str, int] = {}

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        # acks="all": a command acknowledged to the caller must survive a broker failover.
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap_servers, acks="all")
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers, enable_auto_commit=False
        )
        await self._consumer.start()
        partitions = await self._producer.partitions_for(self._topics.results)
        assigned = [TopicPartition(self._topics.results, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_end(*assigned)
        for tp in assigned:
            # Resolve the end offsets now, so no result published after start() is missed.
            await self._consumer.position(tp)
        self._listener = asyncio.create_task(self._listen(), name="wallet-client-results")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        self._waiters.clear()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        self._listener = self._consumer = self._producer = None

    async def _listen(self) -> None:
        # The listener must outlive a failure: once it ended, every later wait would time out.
        while True:
            try:
                await self._match_results()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("wallet_client.results_listener_failed", producer=self.producer)
                await asyncio.sleep(self.listener_retry_seconds)

    async def _match_results(self) -> None:
        assert self._consumer is not None
        mine = self._producer_header[0][1]
        async for record in self._consumer:
            if not self._waiting or record.value is None:
                continue
            if any(name == PRODUCER_HEADER and value != mine for name, value in record.headers):
                continue  # another producer's result: not decoded
            self.results_decoded += 1
            try:
                result = CommandResult.model_validate_json(record.value)
            except ValidationError:
                continue  # not ours to judge; the wallet publishes only valid results
            future = self._waiting.get(result.command_id)
            if future is not None and not future.done():
                future.set_result(result)

    async def send(
        self, command: WalletCommand, *, wait: bool = True, result_timeout: float | None = None
    ) -> CommandResult | None:
        """Publish a command; with wait, return its result or raise WalletTimeout."""
        if self._producer is None:
            raise RuntimeError("WalletClient is not started")
        command_id = command.command_id
        future: asyncio.Future[CommandResult] | None = None
        if wait:
            # The same command sent again while the first send waits (a retry): both wait for
            # its one result, and neither's leaving takes the result away from the other.
            future = self._waiting.get(command_id)
            if future is None:
                future = asyncio.get_running_loop().create_future()
                self._waiting[command_id] = future
            self._waiters[command_id] = self._waiters.get(command_id, 0) + 1
        try:
            await self._producer.send_and_wait(
                self._topics.commands,
                encode(command),
                key=command.user_id.encode(),
                headers=self._producer_header,
            )
            if future is None:
                return None
            # 0 is a wait of its own (publish, then answer at once), not "the default".
            timeout = self._timeout if result_timeout is None else result_timeout
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                raise WalletTimeout(
                    f"no result for command {command_id} "
                    f"({command.type} {command.reference_id}) within {timeout}s"
                ) from None
        finally:
            if future is not None:
                self._leave(command_id)

    def _leave(self, command_id: str) -> None:
        left = self._waiters.get(command_id, 0) - 1
        if left > 0:
            self._waiters[command_id] = left
            return
        self._waiters.pop(command_id, None)
        self._waiting.pop(command_id, None)

    # The seed's API (see the refactor report's technical notes), one method per command type.

    async def credit(
        self,
        *,
        user_id: str,
        currency: str,
        amount: Amount,
        transaction_type: str,
        reference_id: str,
        metadata: Metadata = None,
        wait: bool = True,
        result_timeout: float | None = None,
    ) -> CommandResult | None:
        command = CreditCommand(
            user_id=user_id,
            currency=currency,
            amount=amount,
            transaction_type=transaction_type,
            reference_id=reference_id,
            metadata=metadata or {},
        )
        return await self.send(command, wait=wait, result_timeout=result_timeout)

    async def debit(
        self,
        *,
        user_id: str,
        currency: str,
        amount: Amount,
        transaction_type: str,
        reference_id: str,
        metadata: Metadata = None,
        wait: bool = True,
        result_timeout: float | None = None,
    ) -> CommandResult | None:
        command = DebitCommand(
            user_id=user_id,
            currency=currency,
            amount=amount,
            transaction_type=transaction_type,
            reference_id=reference_id,
            metadata=metadata or {},
        )
        return await self.send(command, wait=wait, result_timeout=result_timeout)

    async def lock_balance(
        self,
        *,
        user_id: str,
        currency: str,
        amount: Amount,
        lock_type: str,
        reference_id: str,
        hold_id: str | None = None,
        metadata: Metadata = None,
        wait: bool = True,
        result_timeout: float | None = None,
    ) -> CommandResult | None:
        command = LockCommand(
            user_id=user_id,
            currency=currency,
            amount=amount,
            transaction_type=lock_type,
            reference_id=reference_id,
            hold_id=hold_id,
            metadata=metadata or {},
        )
        return await self.send(command, wait=wait, result_timeout=result_timeout)

    async def unlock_balance(
        self,
        *,
        user_id: str,
        currency: str,
        amount: Amount,
        unlock_type: str,
        reference_id: str,
        hold_id: str | None = None,
        metadata: Metadata = None,
        wait: bool = True,
        result_timeout: float | None = None,
    ) -> CommandResult | None:
        command = UnlockCommand(
            user_id=user_id,
            currency=currency,
            amount=amount,
            transaction_type=unlock_type,
            reference_id=reference_id,
            hold_id=hold_id,
            metadata=metadata or {},
        )
        return await self.send(command, wait=wait, result_timeout=result_timeout)

    async def release_locked_balance(
        self,
        *,
        user_id: str,
        currency: str,
        amount: Amount,
        release_type: str,
        reference_id: str,
        fee: Amount | None = None,
        hold_id: str | None = None,
        metadata: Metadata = None,
        wait: bool = True,
        result_timeout: float | None = None,
    ) -> CommandResult | None:
        """`amount` leaves the user's locked balance; `fee` of it goes to platform:fees."""
        command = ReleaseLockedCommand(
            user_id=user_id,
            currency=currency,
            amount=amount,
            fee=fee,
            transaction_type=release_type,
            reference_id=reference_id,
            hold_id=hold_id,
            metadata=metadata or {},
        )
        return await self.send(command, wait=wait, result_timeout=result_timeout)

    async def transfer(
        self,
        *,
        from_user: str,
        to_user: str,
        currency: str,
        amount: Amount,
        transfer_type: str,
        reference_id: str,
        metadata: Metadata = None,
        wait: bool = True,
        result_timeout: float | None = None,
    ) -> CommandResult | None:
        command = TransferCommand(
            user_id=from_user,
            to_user=to_user,
            currency=currency,
            amount=amount,
            transaction_type=transfer_type,
            reference_id=reference_id,
            metadata=metadata or {},
        )
        return await self.send(command, wait=wait, result_timeout=result_timeout)

    async def transfer_locked(
        self,
        *,
        from_user: str,
        to_user: str,
        currency: str,
        amount: Amount,
        transfer_type: str,
        reference_id: str,
        fee: Amount | None = None,
        hold_id: str | None = None,
        metadata: Metadata = None,
        wait: bool = True,
        result_timeout: float | None = None,
    ) -> CommandResult | None:
        """P2P release: `amount` leaves the seller's locked balance, `fee` of it to platform:fees."""
        command = TransferLockedCommand(
            user_id=from_user,
            to_user=to_user,
            currency=currency,
            amount=amount,
            fee=fee,
            transaction_type=transfer_type,
            reference_id=reference_id,
            hold_id=hold_id,
            metadata=metadata or {},
        )
        return await self.send(command, wait=wait, result_timeout=result_timeout)

    async def exchange(
        self,
        *,
        user_id: str,
        pay_currency: str,
        pay_amount: Amount,
        receive_currency: str,
        receive_amount: Amount,
        exchange_type: str,
        reference_id: str,
        fee: Amount | None = None,
        metadata: Metadata = None,
        wait: bool = True,
        result_timeout: float | None = None,
    ) -> CommandResult | None:
        """Swap or express buy against platform:liquidity: pay one currency, receive another,
        atomically (rejected insufficient_liquidity if the platform cannot cover it)."""
        command = ExchangeCommand(
            user_id=user_id,
            currency=pay_currency,
            amount=pay_amount,
            fee=fee,
            receive_currency=receive_currency,
            receive_amount=receive_amount,
            transaction_type=exchange_type,
            reference_id=reference_id,
            metadata=metadata or {},
        )
        return await self.send(command, wait=wait, result_timeout=result_timeout)

    async def move_to_savings(
        self,
        *,
        user_id: str,
        currency: str,
        amount: Amount,
        reference_id: str,
        transaction_type: str = "savings_deposit",
        metadata: Metadata = None,
        wait: bool = True,
        result_timeout: float | None = None,
    ) -> CommandResult | None:
        command = SavingsInCommand(
            user_id=user_id,
            currency=currency,
            amount=amount,
            transaction_type=transaction_type,
            reference_id=reference_id,
            metadata=metadata or {},
        )
        return await self.send(command, wait=wait, result_timeout=result_timeout)

    async def move_from_savings(
        self,
        *,
        user_id: str,
        currency: str,
        amount: Amount,
        reference_id: str,
        transaction_type: str = "savings_withdrawal",
        metadata: Metadata = None,
        wait: bool = True,
        result_timeout: float | None = None,
    ) -> CommandResult | None:
        command = SavingsOutCommand(
            user_id=user_id,
            currency=currency,
            amount=amount,
            transaction_type=transaction_type,
            reference_id=reference_id,
            metadata=metadata or {},
        )
        return await self.send(command, wait=wait, result_timeout=result_timeout)

    async def settle_trade(
        self,
        *,
        buyer_id: str,
        seller_id: str,
        quote_currency: str,
        quote_amount: Amount,
        buyer_hold_id: str,
        base_currency: str,
        base_amount: Amount,
        seller_hold_id: str,
        reference_id: str,
        transaction_type: str = "spot_trade",
        seller_fee: Amount | None = None,
        buyer_fee: Amount | None = None,
        metadata: Metadata = None,
        wait: bool = True,
        result_timeout: float | None = None,
    ) -> CommandResult | None:
        """One spot fill: the buyer's held quote for the seller's held base, each side's fee taken
        from what it receives (seller_fee in quote, buyer_fee in base), all or nothing."""
        command = SettleTradeCommand(
            user_id=buyer_id,
            to_user=seller_id,
            currency=quote_currency,
            amount=quote_amount,
            hold_id=buyer_hold_id,
            fee=seller_fee,
            receive_currency=base_currency,
            receive_amount=base_amount,
            counter_hold_id=seller_hold_id,
            receive_fee=buyer_fee,
            transaction_type=transaction_type,
            reference_id=reference_id,
            metadata=metadata or {},
        )
        return await self.send(command, wait=wait, result_timeout=result_timeout)


class WalletCommandPublisher:
    """A service's wallet adapter: commands it built itself (from its outbox, with their own
    command_id) published through a WalletClient, waiting for the outcome only when asked."""

    def __init__(self, client: WalletClient) -> None:
        self._client = client

    async def publish(self, command: WalletCommand) -> None:
        await self._client.send(command, wait=False)

    async def publish_and_wait(
        self, command: WalletCommand, wait_seconds: float
    ) -> CommandResult | None:
        try:
            result = await self._client.send(command, wait=True, result_timeout=wait_seconds)
        except WalletTimeout:
            # Published but unanswered so far: the service's results consumer applies the answer.
            return None
        if result is not None and not result.final:
            # A refusal the wallet recorded nowhere: no answer yet. The callers (the gateway's
            # withdrawals, p2p's trades) ask again with the same command, which may still apply.
            log.warning(
                "wallet_client.result_not_final",
                command_id=result.command_id,
                reference=result.reference_id,
                reason=result.reason,
            )
            return None
        return result
