"""The NOWPayments simulator: `python -m ipn_gateway.simulator` (127.0.0.1:8010 by default)."""

from ipn_gateway.simulator.app import SimulatorSettings, create_simulator_app

__all__ = ["SimulatorSettings", "create_simulator_app"]
