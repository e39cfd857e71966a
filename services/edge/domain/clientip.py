"""Which address a request came from.

The TCP peer, unless the peer is one of our trusted proxies (a load balancer, an ingress): then
X-Forwarded-For is read from the right, skipping trusted proxies, and the first address that is
not one is the client. A client that is not a trusted proxy can write any X-Forwarded-For it
likes; it changes nothing, because it is never read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from services.edge.domain.model import IPAddress, IPNetwork, parse_ip


def _strip_port(entry: str) -> str:
    """'1.2.3.4:5678' -> '1.2.3.4', '[2001:db8::1]:443' -> '2001:db8::1'; bare addresses unchanged."""
    entry = entry.strip().strip('"')
    if entry.startswith("["):
        return entry[1:].split("]", 1)[0]
    if entry.count(":") == 1:
        return entry.split(":", 1)[0]
    return entry


class ClientIpResolver:
    """Resolves the client address of a request from its peer and X-Forwarded-For."""

    # Peers whose answer does not depend on X-Forwarded-For, remembered (parsing an address
    # twice per request was 1 % of the edge's CPU). Bounded: emptied when full.
    MEMO_SIZE = 4096

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._trusted: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in trusted_proxies)
        self._direct: dict[str, tuple[str, list[str]]] = {}

    def _is_trusted(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self._trusted)

    def resolve(self, peer: str, forwarded_for: Iterable[bytes]) -> tuple[str, list[str]]:
        """(client address, the hops from the client to us) for X-Forwarded-For upstream.
        The hops list may be shared between requests: read it, never change it."""
        known = self._direct.get(peer)
        if known is not None:
            return known
        peer_ip = parse_ip(peer)
        if peer_ip is None:
            return peer, [peer] if peer else []
        if not self._trusted or not self._is_trusted(peer_ip):
            if len(self._direct) >= self.MEMO_SIZE:
                self._direct.clear()
            answer = self._direct[peer] = (str(peer_ip), [str(peer_ip)])
            return answer
        entries = [e for value in forwarded_for for e in value.decode("latin-1").split(",") if e.strip()]
        hops = [str(peer_ip)]
        client = peer_ip
        for entry in reversed(entries):
            ip = parse_ip(_strip_port(entry))
            if ip is None:
                # A trusted proxy passed on something that is not an address: stop at what we know.
                break
            hops.append(str(ip))
            client = ip
            if not self._is_trusted(ip):
                break
        return str(client), list(reversed(hops))
