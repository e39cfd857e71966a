"""What the edge knows about a caller, as plain values, and the rules it applies to them:
the key and the token must be of one integration, the integration must be Active, the client
IP must be inside its allowlist, and a scope must be held by both the token and the integration.
No I/O here; the pipeline gathers the values and these functions decide.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

from services.edge.domain.errors import EdgeError, bearer_challenge, unauthorized

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What identity said about an API key: its integration and the clients whose tokens may
    accompany it (our own OAuth client and, in external issuer mode, the external ones)."""

    integration_id: str
    org_id: str
    client_ids: frozenset[str]
    key_hash: str


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A verified access token: whose client, and what it grants until when (Unix seconds).

    External tokens carry no integration (the key's client list binds them); `scopes` is None
    when an external token has no `scope` claim (it then grants what the integration has).
    """

    client_id: str
    integration_id: str
    org_id: str
    scopes: frozenset[str] | None
    expires_at: float
    issuer: str
    external: bool = False


@dataclass(frozen=True, slots=True)
class IntegrationSnapshot:
    """The registry's current view of one integration, as far as the edge needs it."""

    id: str
    org_id: str
    status: str                       # requested, approved, active, suspended, revoked
    scopes: frozenset[str]
    rate_limit_per_minute: int
    daily_quota: int                  # 0: none
    allowlist: tuple[IPNetwork, ...] = field(default=())

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated partner request: key, token and integration agree."""

    key: ApiKeyInfo
    token: TokenGrant
    integration: IntegrationSnapshot

    @property
    def scopes(self) -> frozenset[str]:
        """What this request may do: the token's scopes that the integration still holds."""
        granted = self.integration.scopes
        return granted if self.token.scopes is None else self.token.scopes & granted


def check_pair(key: ApiKeyInfo, token: TokenGrant) -> None:
    """The token's client must be one of the key's, and an own token's integration the key's."""
    same_client = token.client_id in key.client_ids
    same_integration = token.external or (token.integration_id == key.integration_id and token.org_id == key.org_id)
    if not (same_client and same_integration):
        raise unauthorized(
            "credentials_mismatch",
            "the access token and the X-API-Key belong to different integrations; use the client "
            "credentials and API key of the same integration",
        )


def check_active(integration: IntegrationSnapshot) -> None:
    if not integration.active:
        raise unauthorized(
            "integration_inactive",
            f"the integration is {integration.status or 'unknown'}, not active; ask your administrator to check it",
        )


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> IPAddress | None:
    """An address, with IPv4-mapped IPv6 (::ffff:a.b.c.d) unwrapped; None when not an address.
    Cached: every request parses its peer's address, and peers repeat."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def check_ip(integration: IntegrationSnapshot, client_ip: str) -> None:
    """An empty allowlist allows every address; otherwise the client must be inside an entry."""
    if not integration.allowlist:
        return
    ip = parse_ip(client_ip)
    if ip is not None and any(ip.version == net.version and ip in net for net in integration.allowlist):
        return
    raise EdgeError(
        "ip_not_allowed",
        f"requests from {client_ip or 'this address'} are not in the integration's IP allowlist; "
        "call from an allowed address or ask your administrator to update the allowlist",
    )


def check_scope(caller: Caller, needed: str | None) -> None:
    """`needed` must be held by the token and by the integration now; None needs no scope."""
    if needed is None or needed in caller.scopes:
        return
    if caller.token.scopes is not None and needed in caller.integration.scopes:
        why = f"this access token was issued without the {needed} scope; request a new token"
    else:
        why = f"the integration has not been granted the {needed} scope; ask your administrator to grant it"
    raise EdgeError(
        "insufficient_scope", f"this endpoint needs the {needed} scope: {why}",
        headers=(bearer_challenge("insufficient_scope", scope=needed),),
    )
