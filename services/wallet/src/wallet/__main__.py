"""`python -m wallet`: the wallet service (Kafka consumer + HTTP read API) on WALLET_HTTP_PORT."""

from __future__ import annotations

import uvicorn

from shared.logging import configure_logging
from wallet.bootstrap import create_app
from wallet.settings import WalletSettings

SHUTDOWN_GRACE_SECONDS = 3


def main() -> None:
    settings = WalletSettings()
    configure_logging(service="wallet", level=settings.log_level)
    uvicorn.run(
        create_app(settings),
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
