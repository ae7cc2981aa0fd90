"""`python -m trading`: the trading service's HTTP server on TRADING_HTTP_PORT (8004)."""

from __future__ import annotations

from shared.http.serve import serve
from trading.bootstrap import build_service, create_trading_app
from trading.settings import TradingSettings


def main() -> None:
    settings = TradingSettings()
    serve(
        "trading",
        settings,
        lambda s: create_trading_app(build_service(s)),
        host=settings.http_host,
        port=settings.trading_http_port,
    )


if __name__ == "__main__":
    main()
