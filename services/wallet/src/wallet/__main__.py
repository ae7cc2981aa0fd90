"""`python -m wallet`: the wallet service (Kafka consumer + HTTP read API) on WALLET_HTTP_PORT."""

from __future__ import annotations

import gc

import uvicorn

from shared.logging import configure_logging
from wallet.bootstrap import create_app
from wallet.settings import WalletSettings

SHUTDOWN_GRACE_SECONDS = 3
# Allocations between two young-generation collections (CPython's default is 2,000). A batch of
# 500 commands allocates a few hundred thousand objects that almost all die by reference count,
# not by the collector; with the default the collector ran every few commands and walked them,
# about a fifth of the ledger's time. Only cyclic garbage waits longer, and the wallet makes little.
YOUNG_GENERATION_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Collect less often, and never walk what start-up created (modules, models, the app)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)


def main() -> None:
    settings = WalletSettings()
    configure_logging(service="wallet", level=settings.log_level)
    app = create_app(settings)
    tune_garbage_collector()
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        # An open page holds its event stream open: without a bound, a stop would wait for every
        # browser to go away. Requests are reads; the consumer stops after them, in the lifespan.
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )


if __name__ == "__main__":
    main()
