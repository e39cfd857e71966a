"""The client address: the TCP peer, unless the peer is a trusted proxy; then X-Forwarded-For
read from the right, skipping trusted proxies."""

from __future__ import annotations

from services.edge.domain.clientip import ClientIpResolver


def test_without_trusted_proxies_the_header_is_never_read() -> None:
    assert ClientIpResolver().resolve("203.0.113.5", [b"10.0.0.1"]) == ("203.0.113.5", ["203.0.113.5"])


def test_an_untrusted_peer_cannot_spoof_its_address() -> None:
    resolver = ClientIpResolver(["10.0.0.0/8"])
    assert resolver.resolve("203.0.113.5", [b"192.0.2.7"])[0] == "203.0.113.5"


def test_behind_trusted_proxies_the_rightmost_untrusted_address_is_the_client() -> None:
    resolver = ClientIpResolver(["10.0.0.0/8"])
    client, hops = resolver.resolve("10.0.0.2", [b"198.51.100.9, 192.0.2.7", b"10.0.0.1"])
    assert (client, hops) == ("192.0.2.7", ["192.0.2.7", "10.0.0.1", "10.0.0.2"])


def test_when_every_hop_is_trusted_the_leftmost_is_the_client() -> None:
    resolver = ClientIpResolver(["10.0.0.0/8"])
    assert resolver.resolve("10.0.0.2", [b"10.0.0.9, 10.0.0.1"])[0] == "10.0.0.9"
    assert resolver.resolve("10.0.0.2", [])[0] == "10.0.0.2"


def test_garbage_stops_the_walk_and_ports_and_brackets_are_understood() -> None:
    resolver = ClientIpResolver(["10.0.0.0/8", "2001:db8::/32"])
    assert resolver.resolve("10.0.0.2", [b"192.0.2.7, not-an-ip, 10.0.0.1"])[0] == "10.0.0.1"
    assert resolver.resolve("10.0.0.2", [b"192.0.2.7:5123"])[0] == "192.0.2.7"
    assert resolver.resolve("2001:db8::2", [b'"[2001:db8:ffff::1]:443"'])[0] == "2001:db8:ffff::1"
    assert resolver.resolve("::ffff:10.0.0.2", [b"192.0.2.7"])[0] == "192.0.2.7"  # IPv4-mapped peer
