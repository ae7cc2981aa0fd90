"""The embedded MongoDB: mongoeco's wire-protocol server (in-memory engine) as a process of its own.

Run as ``python -m shared.infra.mongo_server --host 127.0.0.1 --port 27017``. It gets its own
process (not a task in the caller's event loop) so that it can be stopped by PID and does not
compete with the code under test for the event loop and the GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import decimal
import os
import signal
from collections.abc import Sequence
from typing import Any

from shared.infra.net import LOOPBACK

# How often the server checks that whoever started it is still there.
_PARENT_CHECK_SECONDS = 1.0

# MongoDB's codes for a write conflict and for a commit of a transaction that was aborted; it
# labels both TransientTransactionError (the whole transaction may be tried again).
_WRITE_CONFLICT = 112
_NO_SUCH_TRANSACTION = 251


def abort_refused_commits() -> None:
    """Make a refused commit end its transaction, as MongoDB does.

    mongoeco refuses a commit when anything committed since the transaction started, but leaves the
    transaction open on the server with its snapshot. The driver then puts that session id back in
    its pool, and whatever uses it next runs inside the dead transaction: reads see its snapshot
    and its uncommitted writes (a wallet created since is missing, a refused credit is there), and
    a new transaction is taken for the old one and refused again. MongoDB aborts a transaction
    that hits a write conflict and labels the error TransientTransactionError; so does this. A
    commit sent again for the aborted transaction (a driver's retry after a lost answer) is
    answered NoSuchTransaction, as MongoDB answers it, not "ok": mongoeco says "ok" to a commit
    with no transaction open, which would report the refused writes as committed.
    """
    from mongoeco.errors import OperationFailure
    from mongoeco.session import ClientSession
    from mongoeco.wire.sessions import WireSessionStore

    commit, start = ClientSession.commit_transaction, ClientSession.start_transaction
    if getattr(commit, "aborts_when_refused", False):
        return
    wire_commit = WireSessionStore.commit_transaction
    # Session ids, not sessions (mongoeco's are not hashable); one per refused commit, at most.
    aborted: set[str] = set()

    def commit_transaction(session: ClientSession) -> None:
        try:
            commit(session)
        except OperationFailure as refused:
            if session.transaction_active:
                session.abort_transaction()
                aborted.add(session.session_id)
            if getattr(refused, "code", None) is None and "Write conflict" in str(refused):
                raise OperationFailure(
                    str(refused), _WRITE_CONFLICT, error_labels=("TransientTransactionError",)
                ) from refused
            raise

    def start_transaction(session: ClientSession, *args: Any, **kwargs: Any) -> None:
        aborted.discard(session.session_id)
        start(session, *args, **kwargs)

    def commit_over_the_wire(store: WireSessionStore, body: dict[str, Any]) -> dict[str, Any]:
        session = store._require_session(body)
        if session.session_id in aborted and not session.transaction_active:
            raise OperationFailure(
                "Transaction has been aborted.",
                _NO_SUCH_TRANSACTION,
                error_labels=("TransientTransactionError",),
            )
        return wire_commit(store, body)

    commit_transaction.aborts_when_refused = True  # type: ignore[attr-defined]
    ClientSession.commit_transaction = commit_transaction  # type: ignore[method-assign,assignment]
    ClientSession.start_transaction = start_transaction  # type: ignore[method-assign,assignment]
    WireSessionStore.commit_transaction = commit_over_the_wire  # type: ignore[method-assign,assignment]


# MongoDB adds, subtracts and multiplies Decimal128 with Decimal128's 34 significant digits.
DECIMAL128_DIGITS = 34


def decimal128_arithmetic() -> None:
    """Make `$inc` on Decimal128 keep 34 significant digits, as MongoDB does.

    mongoeco computes `$inc` with Python's current decimal context, 28 digits unless told: a
    platform account of an 18-decimal currency past ten billion came out rounded, so its currency
    no longer summed to zero and `wallet verify` failed where MongoDB stays exact. Set before the
    server starts any thread, so every thread's context starts from it.
    """
    decimal.DefaultContext.prec = DECIMAL128_DIGITS
    decimal.getcontext().prec = DECIMAL128_DIGITS


async def serve(host: str, port: int, parent_pid: int | None = None) -> None:
    from mongoeco.wire import AsyncMongoEcoProxyServer

    decimal128_arithmetic()
    abort_refused_commits()
    server = AsyncMongoEcoProxyServer(host=host, port=port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"embedded MongoDB listening on {host}:{port}", flush=True)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _PARENT_CHECK_SECONDS)
            # Reparenting means the starter died without stopping us: do not linger as an orphan.
            if parent_pid is not None and os.getppid() != parent_pid:
                break
    finally:
        await server.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=27017)
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this parent dies")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.parent_pid))


if __name__ == "__main__":
    main()
