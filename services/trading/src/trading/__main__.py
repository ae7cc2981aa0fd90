"""`python -m trading`: the trading service's HTTP server on TRADING_HTTP_PORT (8004)."""

from __future__ import annotations

import uvicorn

from shared.logging import configure_logging
from trading.bootstrap import build_service, create_trading_app
from trading.settings import TradingSettings


def main() -> None:
    settings = TradingSettings()
    configure_logging("trading", level=settings.log_level)
    app = create_trading_app(build_service(settings))
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.trading_http_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
