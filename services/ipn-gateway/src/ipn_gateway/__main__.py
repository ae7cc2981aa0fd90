"""`python -m ipn_gateway`: the gateway's HTTP server on IPN_GATEWAY_HTTP_PORT (8002)."""

from __future__ import annotations

import uvicorn

from ipn_gateway.bootstrap import build_gateway, create_gateway_app
from ipn_gateway.settings import GatewaySettings
from shared.logging import configure_logging


def main() -> None:
    settings = GatewaySettings()
    configure_logging("ipn-gateway", level=settings.log_level)
    app = create_gateway_app(build_gateway(settings))
    uvicorn.run(
        app,
        host=settings.ipn_gateway_http_host,
        port=settings.ipn_gateway_http_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
