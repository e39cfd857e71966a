"""The subscription form as typed, kept as typed for a refused form, and turned into webhooks
requests. Every rule about the values (HTTPS, known types, lengths, addresses) is the service's."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.datastructures import FormData

from services.console.webhooks.views import ALL_TYPES, SCHEME_SLUG, SCHEMES
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb


@dataclass
class SubscriptionForm:
    url: str = ""
    activity_types: list[str] = field(default_factory=list)
    scheme: str = "spec"
    description: str = ""
    filter: str = ""

    @classmethod
    def read(cls, form: FormData) -> "SubscriptionForm":
        types = [str(t) for t in form.getlist("activity_types")]
        if str(form.get("all_types") or "") == ALL_TYPES:
            types = [ALL_TYPES]
        scheme = str(form.get("scheme") or "spec")
        return cls(url=str(form.get("url") or "").strip(), activity_types=types,
                   scheme=scheme if scheme in SCHEMES else "spec", description=str(form.get("description") or ""),
                   filter=str(form.get("filter") or "").strip())

    @classmethod
    def of(cls, s: pb.Subscription) -> "SubscriptionForm":
        return cls(url=s.url, activity_types=list(s.activity_types), scheme=SCHEME_SLUG.get(s.signature_scheme, "spec"),
                   description=s.description, filter=s.filter)

    @property
    def all_types(self) -> bool:
        return ALL_TYPES in self.activity_types

    def create_request(self) -> pb.CreateSubscriptionRequest:
        return pb.CreateSubscriptionRequest(url=self.url, activity_types=self.activity_types,
                                            description=self.description, signature_scheme=SCHEMES[self.scheme][0],
                                            filter=self.filter)

    def update_request(self, subscription_id: str) -> pb.UpdateSubscriptionRequest:
        return pb.UpdateSubscriptionRequest(
            subscription_id=subscription_id,
            update_mask=["url", "activity_types", "description", "signature_scheme", "filter"],
            url=self.url, activity_types=self.activity_types, description=self.description,
            signature_scheme=SCHEMES[self.scheme][0], filter=self.filter)
