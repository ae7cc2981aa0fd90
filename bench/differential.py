"""`python -m bench.differential`: everything the wallet's command path observably produces for a
large seeded scenario, as digests (or, with `--dump FILE`, in full, to diff two revisions).

The scenario is the ledger's mix (`build_workload(wave2=True)`: credits, debits, locks and unlocks
with holds, transfers, swaps, duplicates, over-debits) with, at seeded points, every other command
type (release_locked, transfer_locked, settle_trade, savings, credits to locked and savings, fees,
metadata), idempotency conflicts, and invalid or garbage values. It goes through `CommandIntake`
over the memory store in batches, with a fixed clock and counted transaction ids; one batch is
delivered twice (a redelivery). Compared: the results and events as published (bytes, Kafka key,
order), the dead letters, and the store's state afterwards (outcomes, wallets, history rows,
platform accounts). `bench/tests/test_hot_path_equivalence.py` compares the digests with a
fixture written by the ledger before its hot path was rewritten (`--write FILE`); `--baseline REV`
runs REV's sources and this tree's side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.workload import build_workload

CLOCK = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
STAMP = "2026-01-02T03:04:05.678000+00:00"
STREAMS = ("results", "events", "dead_letters", "store")

_GARBAGE: tuple[bytes, ...] = (
    b"",
    b"not json",
    b"[]",
    b"{}",
    b"null",
    b'"text"',
    b"\xff\xfe{}",
    b'{"type": "credit"}',
    b'{"command_id": "g-1", "user_id": "u-1"}',
    b'{"command_id": "g-2", "user_id": "u-1", "type": "teleport", "reference_id": "r",'
    b' "transaction_type": "x", "currency": "BTC", "amount": "1"}',
    b'{"amount": 1e400, "command_id": "g-3"}',
    b'{"amount": NaN}',
    b"x" * 70_000,
)


def _invalid(rng: random.Random, n: int) -> dict[str, Any]:
    """A command broken in one of many ways (some still name their sender)."""
    command: dict[str, Any] = {
        "command_id": f"bad-{n}",
        "type": "credit",
        "reference_id": f"bad-ref-{n}",
        "transaction_type": "deposit_nowpayments",
        "user_id": f"bad-user-{n % 7}",
        "currency": "BTC",
        "amount": "0.5",
        "issued_at": STAMP,
    }
    breakage = rng.randrange(22)
    match breakage:
        case 0:
            command["amount"] = "0.000000001"
        case 1:
            command["amount"] = 5
        case 2:
            command["amount"] = "-1"
        case 3:
            command["amount"] = "0"
        case 4:
            command["currency"] = "XYZ"
        case 5:
            command["extra"] = 1
        case 6:
            command["user_id"] = "has space"
        case 7:
            del command["reference_id"]
        case 8:
            command["type"] = "nope"
        case 9:
            command["transaction_type"] = "UPPER"
        case 10:
            command.update(type="transfer", to_user="")
        case 11:
            command.update(type="release_locked", transaction_type="withdrawal", fee="0.5")
        case 12:
            command.update(
                type="exchange", transaction_type="swap", receive_currency="BTC", receive_amount="1"
            )
        case 13:
            command["metadata"] = {"big": "x" * 9000}
        case 14:
            command["metadata"] = {"n": 2**70}
        case 15:
            command["amount"] = "1e999"
        case 16:
            command["issued_at"] = "2026-01-01T00:00:00"
        case 17:
            command["hold_id"] = "h"
        case 18:
            command.update(type="lock", hold_id=None, amount="abc")
        case 19:
            command["command_id"] = ""
        case 20:
            command["currency"] = "btc"
        case _:
            command["amount"] = "1" * 70
    return command


def _others(rng: random.Random, n: int, users: Sequence[str]) -> list[dict[str, Any]]:
    """Commands of the types the mix lacks: valid ones, and some refused by the ledger."""
    user, other = rng.sample(list(users), 2)
    ref = f"x-ref-{n}"
    btc = f"0.{rng.randint(1, 99_999_999):08d}".rstrip("0") or "0.1"
    base = {"reference_id": ref, "user_id": user, "currency": "BTC", "amount": btc}
    kind = rng.randrange(9)
    if kind == 0:  # a lock, then released out with a fee
        return [
            {**base, "type": "lock", "transaction_type": "withdrawal_lock"},
            {
                **base,
                "type": "release_locked",
                "transaction_type": "withdrawal_release",
                "fee": "0.00000001",
            },
        ]
    if kind == 1:  # escrow, then to the buyer with a fee
        return [
            {**base, "type": "lock", "transaction_type": "p2p_escrow"},
            {
                **base,
                "type": "transfer_locked",
                "transaction_type": "p2p_completed",
                "to_user": other,
                "fee": "0.0000001",
                "metadata": {"trade": n, "note": 'ünïcode "q"', "f": 1.5, "l": [1, None]},
            },
        ]
    if kind == 2:  # a spot fill between two held orders
        eth = "0.00000000000000001"
        return [
            {
                **base,
                "type": "lock",
                "transaction_type": "spot_order",
                "hold_id": f"ob-{n}",
                "reference_id": f"{ref}-b",
            },
            {
                "type": "credit",
                "transaction_type": "legacy_migration_locked",
                "reference_id": f"{ref}-s",
                "user_id": other,
                "currency": "ETH",
                "amount": "0.5",
            },
            {
                **base,
                "type": "settle_trade",
                "transaction_type": "spot_trade",
                "hold_id": f"ob-{n}",
                "to_user": other,
                "counter_hold_id": f"{ref}-s",
                "receive_currency": "ETH",
                "receive_amount": "0.25",
                "receive_fee": eth,
                "fee": "0",
            },
        ]
    if kind == 3:  # savings in and out, interest from platform:interest
        return [
            {**base, "type": "savings_in", "transaction_type": "savings_deposit"},
            {
                **base,
                "reference_id": f"{ref}-i",
                "type": "credit",
                "transaction_type": "savings_interest",
            },
            {
                **base,
                "reference_id": f"{ref}-o",
                "type": "savings_out",
                "transaction_type": "savings_withdrawal",
            },
        ]
    if kind == 4:  # a commission out of fees: refused while fees cannot cover it
        return [{**base, "type": "credit", "transaction_type": "referral_commission"}]
    if kind == 5:  # refused by the ledger: unregistered, same user, wrong hold
        return [
            {**base, "type": "debit", "transaction_type": "p2p_escrow"},
            {**base, "type": "transfer", "transaction_type": "p2p_payment", "to_user": user},
            {**base, "type": "unlock", "transaction_type": "spot_order", "hold_id": "no-hold"},
            {
                **base,
                "type": "release_locked",
                "transaction_type": "withdrawal",
                "destination": "elsewhere",
            },
        ]
    if kind == 6:  # a swap larger than the liquidity
        return [
            {
                **base,
                "type": "exchange",
                "transaction_type": "express_buy",
                "receive_currency": "ETH",
                "receive_amount": "1000",
                "fee": "0.00000001",
            }
        ]
    if kind == 7:  # a credit with metadata, then resent with trailing zeros (a duplicate)
        first = {
            **base,
            "type": "credit",
            "transaction_type": "deposit_bank_transfer",
            "metadata": {"k": "v", "n": [1, 2, {"x": True}]},
        }
        return [first, {**first, "amount": btc + "000"}]
    # a lock released whole to the default destination
    return [
        {**base, "type": "lock", "transaction_type": "withdrawal_lock", "hold_id": f"w-{n}"},
        {
            **base,
            "reference_id": f"{ref}-r",
            "type": "release_locked",
            "transaction_type": "withdrawal",
            "hold_id": f"w-{n}",
        },
    ]


def scenario(count: int, seed: int) -> list[bytes]:
    """The values in delivery order: the ledger's mix with the rest spliced in."""
    workload = build_workload(count, seed=seed, tag="d", wave2=True)
    rng = random.Random(seed)
    users = sorted({c["user_id"] for c in workload.commands})
    values: list[bytes] = []
    sent: list[dict[str, Any]] = []
    for index, command in enumerate(workload.commands):
        command = {**command, "issued_at": STAMP}
        values.append(json.dumps(command).encode())
        sent.append(command)
        roll = rng.random()
        if roll < 0.02:
            for n, extra in enumerate(_others(rng, index, users)):
                values.append(
                    json.dumps(
                        {**extra, "command_id": f"x-{index}-{n}", "issued_at": STAMP}
                    ).encode()
                )
        elif roll < 0.03:
            values.append(json.dumps(_invalid(rng, index)).encode())
        elif roll < 0.035:
            values.append(rng.choice(_GARBAGE))
        elif roll < 0.045 and sent:
            # An idempotency conflict: an earlier key, another amount.
            earlier = dict(rng.choice(sent))
            earlier.update(command_id=f"c-{index}", amount="0.00000777")
            values.append(json.dumps(earlier).encode())
    return values


class _Publisher:
    def __init__(self) -> None:
        self.results: list[str] = []
        self.events: list[str] = []
        self.dead_letters: list[str] = []

    async def publish(
        self,
        results: Sequence[tuple[str, Any]],
        events: Sequence[Any],
        dead_letters: Sequence[tuple[bytes | None, Any]],
        producers: Mapping[str, bytes],
    ) -> None:
        from shared.messaging import encode

        for key, result in results:
            self.results.append(f"{key} {encode(result).decode()}")
        for event in events:
            self.events.append(f"{event.user_id} {encode(event).decode()}")
        for raw_key, letter in dead_letters:
            document = letter.model_dump(mode="json", exclude={"failed_at"})
            self.dead_letters.append(f"{raw_key!r} {json.dumps(document, ensure_ascii=False)}")


def _store_lines(store: Any) -> list[str]:
    lines = []
    for key in sorted(store.outcomes):
        o = store.outcomes[key]
        lines.append(
            "outcome "
            + repr((o.key, o.fingerprint, o.status, o.transaction_id, o.recorded_at))
            + repr((o.entries, o.balances_after, o.reason, o.detail))
            + " "
            + o.command.model_dump_json()
        )
    for key in sorted(store.wallets):
        lines.append(f"wallet {store.wallets[key]!r}")
    for key in sorted(store.history):
        lines.append(f"history {store.history[key]!r}")
    for key in sorted(store.accounts):
        lines.append(f"account {key!r} {store.accounts[key]!r}")
    return lines


async def _run(count: int, seed: int, batch: int) -> dict[str, list[str]]:
    from wallet.adapters.memory_store import InMemoryLedgerStore
    from wallet.application import command_intake
    from wallet.application.command_intake import CommandIntake, IncomingRecord
    from wallet.application.ledger_service import LedgerService

    # The refusal of an invalid command from a known sender is stamped with the time it is made:
    # the scenario's clock instead, so that every result is compared to the byte.
    refuse = command_intake.rejection_for_invalid

    def refusal_at_the_clock(error: Any) -> Any:
        refusal = refuse(error)
        if refusal is None:
            return None
        key, result = refusal
        return key, result.model_copy(update={"processed_at": CLOCK})

    command_intake.rejection_for_invalid = refusal_at_the_clock

    counter = iter(range(1, 10**9))
    store = InMemoryLedgerStore()
    ledger = LedgerService(store, clock=lambda: CLOCK, new_id=lambda: f"tx-{next(counter):08d}")
    publisher = _Publisher()
    intake = CommandIntake(ledger, publisher)
    values = scenario(count, seed)
    records = [
        IncomingRecord(value, f"k{i % 11}".encode(), "wallet.commands", i % 6, i)
        for i, value in enumerate(values)
    ]
    batches = [records[first : first + batch] for first in range(0, len(records), batch)]
    batches.insert(4, batches[2])  # a redelivery
    try:
        for records_of_batch in batches:
            await intake.process(records_of_batch)
    finally:
        command_intake.rejection_for_invalid = refuse
    return {
        "results": publisher.results,
        "events": publisher.events,
        "dead_letters": publisher.dead_letters,
        "store": _store_lines(store),
    }


def run(count: int, seed: int, batch: int) -> dict[str, list[str]]:
    return asyncio.run(_run(count, seed, batch))


def digests(streams: Mapping[str, list[str]]) -> dict[str, Any]:
    return {
        name: {
            "lines": len(streams[name]),
            "sha256": hashlib.sha256("\n".join(streams[name]).encode()).hexdigest(),
        }
        for name in STREAMS
    }


def _baseline(revision: str, args: argparse.Namespace) -> dict[str, Any]:
    from bench.compare import extract

    path = extract(revision, Path(tempfile.mkdtemp(prefix="bench-differential-")))
    env = {**os.environ, "PYTHONPATH": f"{path}:{Path.cwd()}"}
    command = [sys.executable, "-m", "bench.differential", "--commands", str(args.commands)]
    command += ["--seed", str(args.seed), "--batch", str(args.batch)]
    if args.dump:
        command += ["--dump", f"{args.dump}.baseline"]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.differential", description=__doc__)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--dump", type=Path, help="write every stream in full to this file")
    parser.add_argument("--write", type=Path, help="write the digests to this fixture")
    parser.add_argument("--baseline", help="a git revision to compare with, in full")
    args = parser.parse_args()
    streams = run(args.commands, args.seed, args.batch)
    if args.dump:
        args.dump.write_text(
            "".join(f"{name}: {line}\n" for name in STREAMS for line in streams[name])
        )
    summary = {
        "commands": args.commands,
        "seed": args.seed,
        "batch": args.batch,
        "digests": digests(streams),
    }
    if args.write:
        args.write.write_text(json.dumps(summary, indent=2) + "\n")
    if args.baseline:
        other = _baseline(args.baseline, args)
        same = other["digests"] == summary["digests"]
        print(json.dumps({"same": same, "baseline": other, "this": summary}, indent=2))
        if not same:
            sys.exit(1)
        return
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
