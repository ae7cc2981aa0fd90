"""deploy/docker-compose.yml runs the whole platform, as `make run` does: every service the
launcher starts has a container of the one image, reachable on its published port, wired to the
others by their container names. (No Docker here: the file is read, not run.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shared.infra.launcher import SERVICES

COMPOSE = Path(__file__).parents[1] / "deploy" / "docker-compose.yml"
DOCKERFILE = COMPOSE.with_name("Dockerfile")


def compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_every_service_of_make_run_has_a_container_on_its_port() -> None:
    services = compose()
    for spec in SERVICES:
        container = services.get(spec.name)
        assert container is not None, f"{spec.name} is not in {COMPOSE.name}"
        assert container["command"] == ["python", "-m", spec.module], spec.name
        assert container["ports"] == [f"{spec.port}:{spec.port}"], spec.name
        assert int(container["environment"][spec.port_env]) == spec.port, spec.name
        assert container["image"] == "exchange-wallet-platform:dev", spec.name


def test_containers_listen_beyond_their_loopback_and_reach_each_other_by_name() -> None:
    # The image sets HTTP_HOST for every service; no container narrows it to its loopback.
    assert "HTTP_HOST=0.0.0.0" in DOCKERFILE.read_text().replace(" ", "").replace("\\\n", "")
    services = compose()
    for name, container in services.items():
        environment = container.get("environment") or {}
        for variable in ("HTTP_HOST", "IPN_GATEWAY_HTTP_HOST", "NOWPAYMENTS_SIMULATOR_HOST"):
            assert variable not in environment, (name, variable)
    ipn = "http://ipn-gateway:8002/api/nowpayments/ipn"
    gateway = services["ipn-gateway"]["environment"]
    assert gateway["NOWPAYMENTS_API_URL"] == "http://nowpayments-simulator:8010"
    assert gateway["NOWPAYMENTS_IPN_CALLBACK_URL"] == ipn
    assert services["nowpayments-simulator"]["environment"]["NOWPAYMENTS_SIMULATOR_IPN_URL"] == ipn
