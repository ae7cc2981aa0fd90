"""`wallet …`: the ops CLI. replay rebuilds projections from the events, verify checks them, balances
prints a user's balances. Reads MONGODB_URL and WALLET_MONGODB_DATABASE like the service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated

import typer

from shared.money import format_amount
from shared.mongo import connect
from wallet.application.ports import LedgerStore
from wallet.application.reconciliation import replay as replay_projections
from wallet.application.reconciliation import verify as verify_projections
from wallet.settings import WalletSettings

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
    """Rebuild wallets and wallet_transactions from the outcomes (ledger_outcomes) and swap them in.

    Stop the wallet service first: a batch committed during the swap would be missing from the
    rebuilt projections (never from the events; a second replay brings it back).
    """
    if not yes:
        typer.confirm(
            "Replace the live projections with ones rebuilt from the events?"
            " (the wallet service must be stopped)",
            abort=True,
        )

    async def action(store: LedgerStore) -> int:
        projections = await replay_projections(store)
        typer.echo(
            f"replayed: {len(projections.wallets)} wallets, {len(projections.history)} history rows,"
            f" {len(projections.accounts)} platform accounts"
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
