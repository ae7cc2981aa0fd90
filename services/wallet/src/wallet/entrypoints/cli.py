"""`wallet …`: the ops CLI. replay rebuilds projections from the events, verify checks them, balances
prints a user's balances, migrate brings legacy balances in, release-legacy-hold frees a migrated
locked balance and dead-letters shows what the wallet dead-lettered. Reads MONGODB_URL,
WALLET_MONGODB_DATABASE and (for the commands that use Kafka) KAFKA_BOOTSTRAP_SERVERS and
KAFKA_TOPIC_PREFIX like the service."""

from __future__ import annotations

import asyncio
import json
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shared.money import format_amount
from shared.mongo import connect
from wallet.application.migration import WalletCommandSender
from wallet.application.migration import migrate as run_migration
from wallet.application.ports import LedgerStore
from wallet.application.reconciliation import Replay, ReplayRefused
from wallet.application.reconciliation import replay as replay_projections
from wallet.application.reconciliation import verify as verify_projections
from wallet.domain.migration import LEGACY_UNLOCK_TRANSACTION_TYPE, MappingError, parse_mapping
from wallet.settings import WalletSettings

if TYPE_CHECKING:
    from wallet.adapters.dead_letters import StoredDeadLetter  # aiokafka only where it is used

app = typer.Typer(
    help="Wallet operations: rebuild, verify and inspect the ledger's projections.",
    no_args_is_help=True,
    add_completion=False,
)


@asynccontextmanager
async def open_store() -> AsyncIterator[LedgerStore]:
    from wallet.adapters.mongo_store import MongoLedgerStore  # pymongo only here

    settings = WalletSettings()
    client = connect(settings.mongodb_url)
    try:
        store = MongoLedgerStore(client[settings.mongodb_database])
        await store.ensure_indexes()
        yield store
    finally:
        await client.close()


def _run(action: Callable[[LedgerStore], Awaitable[int]]) -> None:
    async def main() -> int:
        async with open_store() as store:
            return await action(store)

    code = asyncio.run(main())
    if code:
        raise typer.Exit(code)


@app.command()
def verify() -> None:
    """Fold the events (each wallet in the order its versions were committed, not by clock) and
    compare with the projections; check every currency sums to zero."""

    async def action(store: LedgerStore) -> int:
        differences = await verify_projections(store)
        for difference in differences:
            typer.echo(str(difference))
        if differences:
            typer.echo(f"{len(differences)} difference(s) found", err=True)
            return 1
        typer.echo("ok: projections match the events and every currency sums to zero")
        return 0

    _run(action)


@app.command()
def replay(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Rebuild wallets, wallet_transactions and ledger_accounts from the outcomes (ledger_outcomes)
    and swap them in. Each platform account whose stored balance no event explains is printed
    (stored and rebuilt balance) before the swap resets it.

    Stop the wallet service first: a batch committed during the swap would be missing from the
    rebuilt projections (never from the events; a second replay brings it back).
    """
    if not yes:
        typer.confirm(
            "Replace the live projections with ones rebuilt from the events?"
            " (the wallet service must be stopped)",
            abort=True,
        )

    def announce(planned: Replay) -> None:
        # Before the swap: once it is done, these stored balances are gone.
        for drift in planned.account_drift:
            typer.echo(
                f"{drift} (the events do not explain the stored balance: reset to the rebuilt one)"
            )

    async def action(store: LedgerStore) -> int:
        try:
            replayed = await replay_projections(store, before_swap=announce)
        except ReplayRefused as refused:
            typer.echo(f"refused: {refused}", err=True)
            return 1
        projections, reset = replayed.projections, len(replayed.account_drift)
        typer.echo(
            f"replayed: {len(projections.wallets)} wallets, {len(projections.history)} history rows,"
            f" {len(projections.accounts)} platform accounts"
            + (f"; {reset} platform account balance(s) reset, listed above" if reset else "")
        )
        return 0

    _run(action)


@app.command()
def balances(
    user_id: Annotated[str, typer.Argument(help="The user whose balances to print.")],
) -> None:
    """Print a user's balances in every currency."""

    async def action(store: LedgerStore) -> int:
        wallets = await store.wallets_of(user_id)
        if not wallets:
            typer.echo(f"{user_id} has no wallets")
            return 0
        typer.echo(
            f"{'currency':<8} {'available':>28} {'locked':>28} {'savings':>28} {'total':>28}"
        )
        for wallet in wallets:
            b = wallet.balances
            typer.echo(
                f"{wallet.currency:<8} {format_amount(b.available):>28} {format_amount(b.locked):>28}"
                f" {format_amount(b.savings):>28} {format_amount(b.total):>28}"
            )
        return 0

    _run(action)


@app.command()
def migrate(
    source_url: Annotated[
        str, typer.Option("--source-url", help="MongoDB URL of the legacy data.")
    ],
    source_db: Annotated[str, typer.Option("--source-db", help="Database of the legacy data.")],
    mapping: Annotated[
        Path, typer.Option("--mapping", help="TOML file: one [[collection]] per legacy collection.")
    ],
    report: Annotated[Path, typer.Option("--report", help="Where to write the JSON report.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and plan only; send nothing.")
    ] = False,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid", help="Migrate the valid rows and list the invalid as skipped."
        ),
    ] = False,
    in_flight: Annotated[
        int,
        typer.Option(
            "--in-flight", min=1, help="Opening transactions awaiting their result at once."
        ),
    ] = 100,
) -> None:
    """Consolidate legacy balance collections into the ledger as opening transactions.

    The legacy collections are only read, except `wallets` in the wallet's own database (migrated
    in place): its legacy documents are first copied to `wallets_legacy_snapshot` there, since the
    ledger replaces each with its wallet. Opening transactions go through wallet.commands to the
    running wallet service; running migrate again (after a stop at any point) sends what is
    missing and changes nothing else.
    """
    try:
        mappings = parse_mapping(tomllib.loads(mapping.read_text()))
    except (OSError, tomllib.TOMLDecodeError, MappingError) as error:
        typer.echo(f"mapping {mapping}: {error}", err=True)
        raise typer.Exit(2) from None

    async def main() -> int:
        from shared.wallet_client import WalletClient
        from wallet.adapters.legacy_source import MongoLegacySource, replaced_in_place

        settings = WalletSettings()
        legacy_client = connect(source_url)
        try:
            source = MongoLegacySource(
                legacy_client[source_db],
                in_place=replaced_in_place(source_db, settings.mongodb_database),
            )
            existing = set(await source.collection_names())
            missing = sorted(m.name for m in mappings if m.name not in existing)
            if missing:
                typer.echo(f"not in {source_db}: {', '.join(missing)}", err=True)
                return 2
            async with open_store() as store:
                if dry_run:
                    result = await run_migration(
                        mappings, source, store, None, dry_run=True, skip_invalid=skip_invalid
                    )
                else:
                    async with WalletClient(
                        settings.kafka_bootstrap_servers,
                        topics=settings.topics,
                        timeout=60.0,
                    ) as wallet:
                        result = await run_migration(
                            mappings,
                            source,
                            store,
                            WalletCommandSender(wallet, in_flight=in_flight),
                            skip_invalid=skip_invalid,
                        )
        finally:
            await legacy_client.close()
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        typer.echo(result.tables())
        typer.echo(f"report: {report}")
        return result.exit_code

    code = asyncio.run(main())
    if code:
        raise typer.Exit(code)


@app.command("release-legacy-hold")
def release_legacy_hold(
    user_id: Annotated[str, typer.Argument(help="The user whose migrated locked balance to free.")],
    currency: Annotated[str, typer.Argument(help="Its currency.")],
    hold: Annotated[str, typer.Argument(help="The hold, legacy:<collection>:<_id>.")],
) -> None:
    """Unlock a legacy locked balance that migrate brought in (its whole hold, once)."""
    if not hold.startswith("legacy:"):
        typer.echo("only legacy holds (legacy:<collection>:<_id>) are released here", err=True)
        raise typer.Exit(2)

    async def main() -> int:
        from shared.wallet_client import WalletClient

        settings = WalletSettings()
        async with open_store() as store:
            wallets = {w.currency: w for w in await store.wallets_of(user_id)}
        wallet = wallets.get(currency.upper())
        amount = dict(wallet.holds).get(hold) if wallet is not None else None
        if not amount:
            typer.echo(f"{user_id} has no {currency.upper()} held under {hold}", err=True)
            return 1
        async with WalletClient(settings.kafka_bootstrap_servers, topics=settings.topics) as client:
            result = await client.unlock_balance(
                user_id=user_id,
                currency=currency.upper(),
                amount=amount,
                unlock_type=LEGACY_UNLOCK_TRANSACTION_TYPE,
                reference_id=hold,
                metadata={"released_by": "ops"},
            )
        assert result is not None
        typer.echo(
            f"{result.status}: {format_amount(amount)} {currency.upper()} of {user_id} under {hold}"
            + (f" ({result.reason})" if result.reason else "")
        )
        return 0 if result.status != "rejected" else 1

    code = asyncio.run(main())
    if code:
        raise typer.Exit(code)


@app.command("dead-letters")
def dead_letters(
    last: Annotated[
        int, typer.Option("--last", min=1, help="How many of the newest dead letters to show.")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per letter.")] = False,
) -> None:
    """Show the newest commands the wallet dead-lettered (wallet.commands.dlq): why, where they
    came from, and the message as received. Reads only: nothing is committed or moved."""

    async def main() -> int:
        from wallet.adapters.dead_letters import read_dead_letters

        settings = WalletSettings()
        topic = settings.topics.dead_letters
        try:
            found = await read_dead_letters(settings.kafka_bootstrap_servers, topic, last)
        except LookupError as missing:
            typer.echo(str(missing), err=True)
            return 1
        for stored in found.last:
            typer.echo(_dead_letter_json(stored) if as_json else _dead_letter_text(stored))
        if not as_json:
            typer.echo(
                f"{found.total} dead letter(s) on {topic}, the newest {len(found.last)} above"
            )
        return 0

    code = asyncio.run(main())
    if code:
        raise typer.Exit(code)


def _dead_letter_text(stored: StoredDeadLetter) -> str:
    letter, where = stored.letter, f"{stored.partition}@{stored.offset}"
    if letter is None:
        return f"[{where}] not a dead letter: {_visible(_shortened(stored.text))}"
    source = (
        f"{_visible(letter.source_topic)} partition {letter.source_partition}"
        f" offset {letter.source_offset}"
    )
    return (
        f"[{where}] {letter.failed_at.isoformat()} {_visible(letter.reason)}: "
        f"{_visible(letter.detail)}\n"
        f"  from {source}, key {letter.key!r}\n"
        f"  {_visible(_shortened(letter.raw_value))}"
    )


def _visible(text: str) -> str:
    """Text from a poison message as an operator's terminal may show it: every character that is
    not printable (controls, escape sequences, bidirectional overrides) written as its escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _dead_letter_json(stored: StoredDeadLetter) -> str:
    where = {"dlq_partition": stored.partition, "dlq_offset": stored.offset}
    if stored.letter is None:
        return json.dumps({**where, "text": stored.text})
    return json.dumps({**where, **stored.letter.model_dump(mode="json")})


def _shortened(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


if __name__ == "__main__":
    app()
