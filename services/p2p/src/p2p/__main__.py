"""`python -m p2p`: the P2P escrow service's HTTP server on P2P_HTTP_PORT (8003)."""

from __future__ import annotations

import uvicorn

from p2p.bootstrap import build_p2p, create_p2p_app
from p2p.settings import P2pSettings
from shared.logging import configure_logging


def main() -> None:
    settings = P2pSettings()
    configure_logging("p2p", level=settings.log_level)
    app = create_p2p_app(build_p2p(settings))
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.p2p_http_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
