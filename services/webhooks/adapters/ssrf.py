"""Which addresses a webhook may be delivered to: an explicit list of refused networks.

Not `ipaddress.is_global`/`is_private`: their answers for some ranges (CGNAT, 192.0.0.0/24,
the IPv4-mapped and NAT64 forms) changed between Python releases and are wrong on some. The
lists below are the IANA special-purpose registries' non-global entries, plus multicast.
IPv4 addresses embedded in IPv6 (IPv4-mapped, NAT64, 6to4) are judged by the IPv4 address they
carry; the deprecated IPv4-compatible form (::a.b.c.d) is refused outright.

`DestinationCheck` applies the same policy when an administrator creates a subscription or
changes its URL, so a URL no delivery could reach is refused then, naming the setting that
allows it. Every delivery still checks the addresses it connects to: names change.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REFUSED_V4: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
)

REFUSED_V6: tuple[tuple[str, str], ...] = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments (incl. Teredo)"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing"),
    ("fc00::/7", "unique local (private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)

# The setting an operator uses to allow private receivers, named in every refusal.
ALLOW_SETTING = "TRELLIS_WEBHOOKS_ALLOWED_PRIVATE_NETWORKS"

_V4 = tuple((ipaddress.IPv4Network(net), why) for net, why in REFUSED_V4)
_V6 = tuple((ipaddress.IPv6Network(net), why) for net, why in REFUSED_V6)

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_UNSPECIFIED_OR_LOOPBACK = (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1"))


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4, compatible), if any."""
    if address in _MAPPED or address in _NAT64 or address in _COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why a delivery must not go to `address`, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "scoped (zone) IPv6 address"
        if address in _UNSPECIFIED_OR_LOOPBACK:
            return "unspecified" if int(address) == 0 else "loopback"
        inner = embedded_ipv4(address)
        if inner is not None:
            if address in _COMPATIBLE:
                return "IPv4-compatible IPv6 address (deprecated)"
            why = refusal_reason(inner)
            return f"{why}, in IPv6 form" if why else None
        for network, why in _V6:
            if address in network:
                return why
        return None
    for network4, why in _V4:
        if address in network4:
            return why
    return None


def _allowed_network(entry: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(entry, strict=True)
    except ValueError:
        pass
    try:
        meant = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise ValueError(f"{ALLOW_SETTING}: {entry!r} is not a network; give CIDR blocks such as 127.0.0.0/8") from None
    raise ValueError(f"{ALLOW_SETTING}: {entry} has host bits set; write {meant} for the network, or "
                     f"{entry.split('/', 1)[0]}/{meant.max_prefixlen} for the one address")


@dataclass(frozen=True)
class AddressPolicy:
    """Refuses the special-purpose networks, except those an operator allowed by name."""

    allowed: tuple[IPNetwork, ...] = ()

    @classmethod
    def allowing(cls, networks: Iterable[str]) -> "AddressPolicy":
        """The policy allowing `networks` (ALLOW_SETTING); ValueError naming the setting for an
        entry that is not a network, or has host bits set (10.0.0.1/8 is not silently 10.0.0.0/8)."""
        return cls(tuple(_allowed_network(n.strip()) for n in networks if n.strip()))

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why `address` is refused, or None when deliveries may go there."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            inner = embedded_ipv4(ip)
            if inner is not None and any(net.version == 4 and inner in net for net in self.allowed):
                return None
        return refusal_reason(ip)


# How long a subscription's create or update waits for its host name to resolve.
RESOLVE_SECONDS = 3.0

# (host, port) -> (family, address) pairs; raises OSError when the name does not resolve.
Lookup = Callable[[str, int], Awaitable[list[tuple[int, str]]]]


@dataclass(frozen=True)
class DestinationCheck:
    """Whether any delivery could ever reach a URL under the policy, asked when an administrator
    sets it. A host name that does not resolve (yet), or not within `timeout` seconds, passes:
    it may resolve later, and every delivery checks again."""

    policy: AddressPolicy
    lookup: Lookup
    timeout: float = RESOLVE_SECONDS

    async def refusal(self, url: str) -> str | None:
        """Why no delivery could reach `url` (naming ALLOW_SETTING), or None when one may."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            address: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None:
            reason = self.policy.refusal(address)
            return _refused(f"its host {host} is refused ({reason})") if reason else None
        try:
            # The lookup runs off the event loop (getaddrinfo in a worker thread); a slow
            # resolver costs the caller at most `timeout`, never the other requests.
            async with asyncio.timeout(self.timeout):
                answers = await self.lookup(host, parts.port or 443)
        except (OSError, TimeoutError, UnicodeError):
            return None
        reasons = [(a, self.policy.refusal(a)) for _, a in answers]
        if not reasons or any(reason is None for _, reason in reasons):
            return None
        found = ", ".join(f"{a} ({reason})" for a, reason in reasons)
        return _refused(f"its host {host} resolves only to refused addresses: {found}")


def _refused(why: str) -> str:
    return (f"no delivery could reach this endpoint URL: {why}. Webhooks go only to public addresses; an operator "
            f"can allow private networks (a receiver on this machine, say) with {ALLOW_SETTING}, "
            'for example ["127.0.0.0/8"]')
