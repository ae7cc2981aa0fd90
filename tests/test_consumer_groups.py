"""Every consumer group of every service lives under KAFKA_TOPIC_PREFIX, as the topics do: two
deployments (or test runs) sharing one broker never share a group, so neither rebalances the
other's consumers. Built, not started: no broker or database is needed."""

from __future__ import annotations

import pytest

from ipn_gateway.bootstrap import build_gateway
from ipn_gateway.settings import GatewaySettings
from p2p.bootstrap import build_p2p
from p2p.settings import P2pSettings
from shared.messaging.topics import Topics
from trading.bootstrap import build_service
from trading.settings import TradingSettings

PREFIX = "staging."


def test_a_group_is_named_under_the_prefix() -> None:
    assert Topics(PREFIX).group("wallet") == "staging.wallet"
    assert Topics().group("wallet") == "wallet"


def test_the_services_results_groups_are_under_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", PREFIX)
    gateway = build_gateway(GatewaySettings())
    p2p = build_p2p(P2pSettings())
    trading = build_service(TradingSettings(), features=())
    assert gateway.results.group_id == "staging.ipn-gateway"
    assert p2p.results.group_id == "staging.p2p"
    assert trading.results.group_id == "staging.trading"
