"""The SSRF address policy: every refused range, its IPv4-mapped and NAT64 forms, the
operator's allowed networks, and the check of a URL when an administrator sets it."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time

import pytest

from services.webhooks.adapters.sender import CheckedResolver, RefusedAddress
from services.webhooks.adapters.ssrf import ALLOW_SETTING, REFUSED_V4, REFUSED_V6, AddressPolicy, DestinationCheck, refusal_reason

# One address inside each refused IPv4 network (first, middle and last where they differ).
V4_SAMPLES = [
    "0.0.0.0", "0.255.255.255", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.254", "127.0.0.1",
    "127.255.255.254", "169.254.169.254", "169.254.0.1", "172.16.0.1", "172.31.255.254", "192.0.0.8", "192.0.2.1",
    "192.88.99.1", "192.168.1.1", "198.18.0.1", "198.19.255.254", "198.51.100.7", "203.0.113.9", "224.0.0.1",
    "239.255.255.250", "240.0.0.1", "255.255.255.255",
]
V6_SAMPLES = [
    "::", "::1", "64:ff9b:1::1", "100::1", "2001::1", "2001:db8::1", "3fff::1", "5f00::1", "fc00::1", "fd12:3456::1",
    "fe80::1", "febf::1", "fec0::1", "ff02::1", "ff0e::1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "100.63.255.255", "100.128.0.0", "172.32.0.1", "192.0.1.1",
          "198.20.0.1", "2606:4700:4700::1111", "2a00:1450:4001::1"]


@pytest.mark.parametrize("address", V4_SAMPLES + V6_SAMPLES)
def test_special_purpose_addresses_are_refused(address: str) -> None:
    assert AddressPolicy().refusal(address) is not None


@pytest.mark.parametrize("address", V4_SAMPLES)
def test_ipv4_mapped_and_nat64_forms_are_refused_too(address: str) -> None:
    v4 = int(ipaddress.IPv4Address(address))
    mapped = ipaddress.IPv6Address((0xFFFF << 32) | v4)
    nat64 = ipaddress.IPv6Address((0x64FF9B << 96) | v4)
    six_to_four = ipaddress.IPv6Address((0x2002 << 112) | (v4 << 80) | 1)
    for form in (mapped, nat64, six_to_four):
        assert AddressPolicy().refusal(form) is not None, form


def test_every_listed_network_is_refused_at_both_ends() -> None:
    for cidr, _ in REFUSED_V4 + REFUSED_V6:
        network = ipaddress.ip_network(cidr)
        assert refusal_reason(network[0]) is not None and refusal_reason(network[-1]) is not None, cidr


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_and_their_mapped_forms_are_allowed(address: str) -> None:
    assert AddressPolicy().refusal(address) is None
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        assert AddressPolicy().refusal(ipaddress.IPv6Address((0xFFFF << 32) | int(ip))) is None
        assert AddressPolicy().refusal(ipaddress.IPv6Address((0x64FF9B << 96) | int(ip))) is None


def test_cloud_metadata_is_refused_in_every_spelling() -> None:
    for spelling in ("169.254.169.254", "::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "64:ff9b::a9fe:a9fe",
                     "fd00:ec2::254", "fe80::a9fe:a9fe"):
        assert AddressPolicy().refusal(spelling) is not None, spelling


def test_allowed_networks_are_exempt_and_nothing_else() -> None:
    policy = AddressPolicy.allowing(["127.0.0.0/8", "::1/128"])
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("::1") is None
    assert policy.refusal("::ffff:127.0.0.1") is None
    assert policy.refusal("10.0.0.1") is not None
    assert policy.refusal("169.254.169.254") is not None
    assert AddressPolicy().refusal("127.0.0.1") == "loopback"


async def test_the_resolver_returns_only_checked_addresses_from_one_lookup() -> None:
    calls: list[str] = []

    async def lookup(host: str, port: int) -> list[tuple[int, str]]:
        calls.append(host)
        return [(socket.AF_INET, "10.0.0.5"), (socket.AF_INET, "93.184.215.14"), (socket.AF_INET6, "::1")]

    resolved = await CheckedResolver(AddressPolicy(), lookup).resolve("hooks.example.com", 443)
    assert [r["host"] for r in resolved] == ["93.184.215.14"]
    assert resolved[0]["hostname"] == "hooks.example.com" and calls == ["hooks.example.com"]


async def test_a_host_with_only_refused_addresses_is_refused() -> None:
    async def lookup(host: str, port: int) -> list[tuple[int, str]]:
        return [(socket.AF_INET, "169.254.169.254"), (socket.AF_INET6, "64:ff9b::a9fe:a9fe")]

    with pytest.raises(RefusedAddress) as refused:
        await CheckedResolver(AddressPolicy(), lookup).resolve("metadata.example.com", 443)
    assert "169.254.169.254" in str(refused.value)


# --- checking a URL when it is set ------------------------------------------------------------


def _answers(*addresses: str):  # type: ignore[no-untyped-def]
    async def lookup(host: str, port: int) -> list[tuple[int, str]]:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in addresses]

    return lookup


async def test_a_url_is_refused_only_when_every_address_is_refused() -> None:
    strict = AddressPolicy()
    only_private = await DestinationCheck(strict, _answers("10.0.0.1", "fd00::1")).refusal("https://in.test/x")
    assert only_private is not None and ALLOW_SETTING in only_private and "10.0.0.1 (private (RFC 1918))" in only_private
    assert await DestinationCheck(strict, _answers("10.0.0.1", "8.8.8.8")).refusal("https://in.test/x") is None
    assert await DestinationCheck(AddressPolicy.allowing(["10.0.0.0/8", "fd00::/8"]),
                                  _answers("10.0.0.1", "fd00::1")).refusal("https://in.test/x") is None
    literal = await DestinationCheck(strict, _answers()).refusal("https://[fe80::1%25eth0]:8443/x")
    assert literal is not None and "refused (scoped (zone) IPv6 address)" in literal


async def test_a_name_that_does_not_resolve_is_accepted() -> None:
    async def nxdomain(host: str, port: int) -> list[tuple[int, str]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    assert await DestinationCheck(AddressPolicy(), nxdomain).refusal("https://nowhere.invalid/x") is None
    assert await DestinationCheck(AddressPolicy(), _answers()).refusal("https://empty.test/x") is None


async def test_a_slow_resolver_is_cut_at_the_timeout_while_the_event_loop_keeps_running() -> None:
    release = threading.Event()

    async def stuck(host: str, port: int) -> list[tuple[int, str]]:
        # A blocking resolver, run the way the system lookup runs getaddrinfo: in a worker thread.
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        return [(socket.AF_INET, "10.0.0.1")]

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.get_running_loop().create_task(ticker())
    started = time.monotonic()
    try:
        assert await DestinationCheck(AddressPolicy(), stuck, timeout=0.3).refusal("https://slow.test/x") is None
    finally:
        release.set()
        task.cancel()
    assert time.monotonic() - started < 2
    assert ticks >= 10  # the loop served others while the lookup was waiting


@pytest.mark.parametrize(("entry", "message"), [
    ("127.0.0.1/8", "127.0.0.1/8 has host bits set; write 127.0.0.0/8 for the network, or 127.0.0.1/32 for the one address"),
    ("fd00::1/8", "write fd00::/8 for the network, or fd00::1/128"),
    ("not-a-network", "'not-a-network' is not a network"),
])
def test_an_allowed_network_the_operator_mistyped_is_refused_naming_the_setting(entry: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        AddressPolicy.allowing(["10.0.0.0/8", entry])
    assert str(caught.value).startswith(f"{ALLOW_SETTING}: ") and message in str(caught.value)
