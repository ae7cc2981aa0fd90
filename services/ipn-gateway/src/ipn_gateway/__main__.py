"""`python -m ipn_gateway`: the gateway's HTTP server on IPN_GATEWAY_HTTP_PORT (8002)."""

from __future__ import annotations

from ipn_gateway.bootstrap import build_gateway, create_gateway_app
from ipn_gateway.settings import GatewaySettings
from shared.http.serve import serve


def main() -> None:
    settings = GatewaySettings()
    serve(
        "ipn-gateway",
        settings,
        lambda s: create_gateway_app(build_gateway(s)),
        host=settings.listen_host,
        port=settings.ipn_gateway_http_port,
    )


if __name__ == "__main__":
    main()
