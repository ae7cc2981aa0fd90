"""`python -m ipn_gateway.simulator`: NOWPayments' API and IPNs for development."""

from __future__ import annotations

import uvicorn

from ipn_gateway.simulator.app import SimulatorSettings, create_simulator_app
from shared.logging import configure_logging


def main() -> None:
    settings = SimulatorSettings()
    configure_logging("nowpayments-simulator", level=settings.log_level)
    uvicorn.run(
        create_simulator_app(settings),
        host=settings.listen_host,
        port=settings.nowpayments_simulator_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
