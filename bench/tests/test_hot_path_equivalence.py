"""The command path's observable output is the one the ledger had before its hot path was rewritten.

`bench.differential` runs a large seeded scenario (the ledger's mix, every other command type,
idempotency conflicts, a redelivery, invalid and garbage values) through `CommandIntake` over the
memory store with a fixed clock and counted transaction ids. The fixture holds the digests of what
that ledger published (results, events: bytes, keys, order), dead-lettered, and left in the store;
`python -m bench.differential --write <fixture>` wrote it, and `--baseline REV --dump FILE`
compares two revisions in full when they differ. It was written again only where a fix changed
answers on purpose, the full dump compared first: a transaction type written other than as
registered ones are (`UPPER`) is rejected `unknown_transaction_type`, as the contract names it,
not `invalid_field` (the results and dead letters of those commands, nothing else); and a change
to a wallet is stamped after the wallet's last change when the clock shows the same millisecond
(the times of batches after the first under the fixed clock, nothing else: the two dumps are
equal with their times left out).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.differential import digests, run

FIXTURE = Path(__file__).parent / "hot_path_digests.json"


def test_the_scenario_gives_what_the_former_ledger_gave() -> None:
    expected = json.loads(FIXTURE.read_text())
    streams = run(expected["commands"], expected["seed"], expected["batch"])
    assert digests(streams) == expected["digests"]
