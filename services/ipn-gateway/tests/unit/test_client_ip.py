"""Who posted: the right-most X-Forwarded-For hop that is not one of our proxies."""

from __future__ import annotations

import ipaddress

import pytest

from ipn_gateway.entrypoints.http import client_ip

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # No proxy configured in front: the header is the client's own words, ignored.
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),
        # Through our proxy: the hop it saw, whatever the client wrote before it.
        ("10.0.0.2", "1.2.3.4, 198.51.100.7", "198.51.100.7"),
        ("10.0.0.2", "198.51.100.7", "198.51.100.7"),
        # Through two of our proxies.
        ("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.1.1.1", "198.51.100.7"),
        ("2001:db8::1", "2001:db8::5, 192.0.2.44", "192.0.2.44"),
        # Garbage is not one of our proxies, so it is where the walk stops.
        ("10.0.0.2", "198.51.100.7, not-an-ip", "not-an-ip"),
        # Only our proxies in the chain: the left-most, and the peer without a header.
        ("10.0.0.2", "10.0.0.3", "10.0.0.3"),
        ("10.0.0.2", "", "10.0.0.2"),
        (None, "1.2.3.4", None),
    ],
)
def test_client_is_the_right_most_untrusted_hop(
    peer: str | None, forwarded: str, expected: str | None
) -> None:
    assert client_ip(peer, forwarded, PROXIES) == expected


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_ip("10.0.0.2", "1.2.3.4", ()) == "10.0.0.2"
