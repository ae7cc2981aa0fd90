"""``make run``: the infrastructure, then every service that exists, in the foreground.

Run as ``python -m shared.infra.launcher``. Kafka and MongoDB come from
``KAFKA_BOOTSTRAP_SERVERS`` / ``MONGODB_URL`` or are started embedded on the contract's ports
(127.0.0.1:9092, 127.0.0.1:27017).
A service is a package with a ``__main__`` module, started as ``python -m <module>`` with those two
variables and its port variable set; it is ready when ``GET /healthz`` answers 200. Ctrl-C or
SIGTERM stops every service (its whole process group) and then the infrastructure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.infra.infrastructure import KAFKA_ENV, MONGODB_ENV, Infrastructure
from shared.infra.net import LOOPBACK, StartupError, wait_until
from shared.infra.processes import ManagedProcess

CONTRACT_KAFKA_PORT = 9092
CONTRACT_MONGODB_PORT = 27017


@dataclass(frozen=True)
class ServiceSpec:
    """How to start one service and where it listens."""

    name: str
    module: str
    port: int
    port_env: str
    # Not started when this variable is set (the simulator stands in for a real NOWPayments URL).
    unless_env: str | None = None
    # Set to this service's base URL for the services started after it.
    provides_env: str | None = None
    # A development stand-in: never started with IS_STAGING=false.
    staging_only: bool = False

    def exists(self) -> bool:
        try:
            return importlib.util.find_spec(f"{self.module}.__main__") is not None
        except ModuleNotFoundError:
            return False


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        "nowpayments-simulator",
        "ipn_gateway.simulator",
        8010,
        "NOWPAYMENTS_SIMULATOR_PORT",
        unless_env="NOWPAYMENTS_API_URL",
        provides_env="NOWPAYMENTS_API_URL",
        staging_only=True,
    ),
    ServiceSpec("wallet", "wallet", 8001, "WALLET_HTTP_PORT"),
    ServiceSpec("ipn-gateway", "ipn_gateway", 8002, "IPN_GATEWAY_HTTP_PORT"),
    ServiceSpec("p2p", "p2p", 8003, "P2P_HTTP_PORT"),
    ServiceSpec("trading", "trading", 8004, "TRADING_HTTP_PORT"),
)


@dataclass(frozen=True)
class PlannedService:
    spec: ServiceSpec
    port: int
    env: Mapping[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def is_production(env: Mapping[str, str]) -> bool:
    """IS_STAGING set to a false value, spelled as the services' settings read it."""
    return env.get("IS_STAGING", "").strip().lower() in {"false", "0", "no", "off", "f", "n"}


def plan_services(
    specs: Sequence[ServiceSpec],
    env: Mapping[str, str],
    *,
    exists: Callable[[ServiceSpec], bool] = ServiceSpec.exists,
) -> list[PlannedService]:
    """Which services to start, on which port, with which environment (in start order)."""
    production = is_production(env)
    chosen = [
        s
        for s in specs
        if not (s.unless_env and env.get(s.unless_env))
        and not (s.staging_only and production)
        and exists(s)
    ]
    ports = {s.name: int(env.get(s.port_env) or s.port) for s in chosen}
    common = dict(env)
    for spec in chosen:
        if spec.provides_env:
            common[spec.provides_env] = f"http://{LOOPBACK}:{ports[spec.name]}"
    return [
        PlannedService(spec, ports[spec.name], {**common, spec.port_env: str(ports[spec.name])})
        for spec in chosen
    ]


async def healthy(url: str) -> bool:
    async with httpx.AsyncClient(timeout=2.0) as client:
        response = await client.get(f"{url}/healthz")
        return response.status_code == 200


class Launcher:
    """Owns the infrastructure and the service processes of one run."""

    def __init__(
        self,
        infrastructure: Infrastructure,
        services: Sequence[ServiceSpec] = SERVICES,
        *,
        env: Mapping[str, str] | None = None,
        ready_within: float = 60.0,
        say: Callable[[str], None] = print,
    ) -> None:
        self.infrastructure = infrastructure
        self.services = services
        self.env = dict(os.environ if env is None else env)
        self.ready_within = ready_within
        self.say = say
        self.running: list[tuple[PlannedService, ManagedProcess]] = []

    async def start(self) -> None:
        await self.infrastructure.start()
        self.say(self.infrastructure.kafka.describe())
        self.say(self.infrastructure.mongodb.describe())
        env = {
            **self.env,
            KAFKA_ENV: self.infrastructure.kafka_bootstrap_servers,
            MONGODB_ENV: self.infrastructure.mongodb_url,
        }
        planned = plan_services(self.services, env)
        if not planned:
            self.say("no service package has a __main__ module yet: infrastructure only")
        for service in planned:
            argv = [sys.executable, "-m", service.spec.module]
            process = ManagedProcess(service.spec.name, argv, env=service.env)
            self.running.append((service, process))
        await asyncio.gather(*(self._wait_ready(s, p) for s, p in self.running))

    async def _wait_ready(self, service: PlannedService, process: ManagedProcess) -> None:
        async def answers() -> bool:
            return await healthy(service.url)

        await wait_until(
            f"{service.spec.name} ({service.url}/healthz)",
            answers,
            within=self.ready_within,
            interval=0.2,
            still_running=lambda: process.poll() is None,
        )
        self.say(f"{service.spec.name}: {service.url} (pid {process.pid})")

    async def watch(self, stop: asyncio.Event) -> int:
        """Wait for a stop request (exit 0) or for a service to die (exit 1)."""
        while not stop.is_set():
            for service, process in self.running:
                code = process.poll()
                if code is not None:
                    self.say(f"{service.spec.name} exited with code {code}: stopping everything")
                    return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        return 0

    def stop(self) -> None:
        """Services first (newest first), then the infrastructure."""
        while self.running:
            _, process = self.running.pop()
            process.stop()
        self.infrastructure.stop()


async def serve(launcher: Launcher) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        startup = asyncio.create_task(launcher.start())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({startup, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not startup.done():  # a stop request during startup
            startup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await startup
            return 0
        stopped.cancel()
        try:
            startup.result()
        except StartupError as exc:
            launcher.say(f"startup failed: {exc}")
            return 1
        launcher.say("ready; Ctrl-C stops everything")
        return await launcher.watch(stop)
    finally:
        launcher.say("stopping")
        launcher.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None, services: Sequence[ServiceSpec] = SERVICES) -> int:
    parser = argparse.ArgumentParser(description="Run the whole system in the foreground.")
    parser.add_argument("--kafka-port", type=int, default=CONTRACT_KAFKA_PORT, help="0 = any")
    parser.add_argument("--mongodb-port", type=int, default=CONTRACT_MONGODB_PORT, help="0 = any")
    parser.add_argument("--log-dir", type=Path, default=Path(".run/logs"), help="embedded servers")
    parser.add_argument("--ready-within", type=float, default=60.0, help="seconds per service")
    args = parser.parse_args(argv)
    # The readiness probes expect refused connections at first; aiokafka would log each one.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    infrastructure = Infrastructure.from_environment(
        kafka_port=args.kafka_port, mongodb_port=args.mongodb_port, log_dir=args.log_dir
    )
    launcher = Launcher(
        infrastructure,
        services,
        ready_within=args.ready_within,
        say=lambda line: print(line, flush=True),
    )
    return asyncio.run(serve(launcher))


if __name__ == "__main__":
    sys.exit(main())
