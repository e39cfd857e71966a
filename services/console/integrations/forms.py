"""The integration form as typed: kept as text so a refused form shows exactly what was sent,
and turned into registry requests. Only reading the form happens here (a number that is not
a number); every rule about the values is the registry's."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from starlette.datastructures import FormData

from services.contracts.trellis.registry.v1 import registry_pb2 as pb

DEFAULT_RATE_LIMIT = "60"  # the spec's default, shown in the form
_ENTRY_SEPARATORS = re.compile(r"[\s,]+")


class FormProblems(Exception):
    """Fields the console could not read; field -> message."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(problems.values()))
        self.problems = problems


@dataclass
class IntegrationForm:
    vendor_id: str = ""
    name: str = ""
    description: str = ""
    owner: str = ""
    scopes: list[str] = field(default_factory=list)
    rate_limit_per_minute: str = DEFAULT_RATE_LIMIT
    daily_quota: str = ""
    ip_allowlist: str = ""
    version: str = ""

    @classmethod
    def read(cls, form: FormData) -> "IntegrationForm":
        text = {k: str(form.get(k) or "") for k in ("vendor_id", "name", "description", "owner",
                                                      "rate_limit_per_minute", "daily_quota", "ip_allowlist", "version")}
        return cls(scopes=[str(s) for s in form.getlist("scopes")], **text)

    @classmethod
    def of(cls, integration: pb.Integration) -> "IntegrationForm":
        return cls(vendor_id=integration.vendor_id, name=integration.name, description=integration.description,
                   owner=integration.owner, scopes=list(integration.scopes),
                   rate_limit_per_minute=str(integration.rate_limit_per_minute),
                   daily_quota=str(integration.daily_quota) if integration.daily_quota else "",
                   ip_allowlist="\n".join(integration.ip_allowlist), version=str(integration.version))

    def allowlist(self) -> list[str]:
        return [entry for entry in _ENTRY_SEPARATORS.split(self.ip_allowlist) if entry]

    def _numbers(self) -> tuple[int, int]:
        problems: dict[str, str] = {}
        rate = _whole(self.rate_limit_per_minute, "rate_limit_per_minute", "Rate limit", problems, default=0)
        quota = _whole(self.daily_quota, "daily_quota", "Daily quota", problems, default=0)
        if problems:
            raise FormProblems(problems)
        return rate, quota

    def create_request(self) -> pb.CreateIntegrationRequest:
        rate, quota = self._numbers()
        return pb.CreateIntegrationRequest(
            vendor_id=self.vendor_id, name=self.name, description=self.description, owner=self.owner,
            scopes=self.scopes, rate_limit_per_minute=rate, daily_quota=quota, ip_allowlist=self.allowlist())

    def update_request(self, integration_id: str) -> pb.UpdateIntegrationRequest:
        """Every editable field, with the version the form was made from (a concurrent change is refused)."""
        rate, quota = self._numbers()
        version = int(self.version) if self.version.isdigit() else 0
        return pb.UpdateIntegrationRequest(
            integration_id=integration_id,
            update_mask=["name", "description", "owner", "scopes", "rate_limit_per_minute", "daily_quota", "ip_allowlist"],
            name=self.name, description=self.description, owner=self.owner, scopes=self.scopes,
            rate_limit_per_minute=rate, daily_quota=quota, ip_allowlist=self.allowlist(), expected_version=version)


def _whole(text: str, key: str, label: str, problems: dict[str, str], *, default: int) -> int:
    text = text.strip()
    if not text:
        return default
    if not re.fullmatch(r"[0-9]{1,12}", text):
        problems[key] = f"{label} must be a whole number, such as 60."
        return default
    value = int(text)
    if value > 2**31 - 1:
        problems[key] = f"{label} is too large."
        return default
    return value
