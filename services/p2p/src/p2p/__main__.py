"""`python -m p2p`: the P2P escrow service's HTTP server on P2P_HTTP_PORT (8003)."""

from __future__ import annotations

from p2p.bootstrap import build_p2p, create_p2p_app
from p2p.settings import P2pSettings
from shared.http.serve import serve


def main() -> None:
    settings = P2pSettings()
    serve(
        "p2p",
        settings,
        lambda s: create_p2p_app(build_p2p(s)),
        host=settings.http_host,
        port=settings.p2p_http_port,
    )


if __name__ == "__main__":
    main()
