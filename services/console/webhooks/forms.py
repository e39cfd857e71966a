"""The subscription form as typed, kept as typed for a refused form, and turned into webhooks
requests. Every rule about the values (HTTPS, known types, lengths, addresses, header names,
certificates) is the service's; the form only reads its two free-text fields.

Custom header values and the client certificate's private key are secrets: a refused form
shows them back empty (the header names are kept), so a secret never travels back in a page."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.datastructures import FormData

from services.console.errors import Refusal, Refused
from services.console.webhooks.views import ALL_TYPES, SCHEME_SLUG, SCHEMES
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb


def _text(form: FormData, name: str) -> str:
    return str(form.get(name) or "")


@dataclass
class SubscriptionForm:
    url: str = ""
    activity_types: list[str] = field(default_factory=list)
    scheme: str = "spec"
    description: str = ""
    filter: str = ""
    custom_headers: str = ""  # "Name: value" a line; on edit, empty keeps the current ones
    remove_headers: bool = False
    certificate_pem: str = ""  # with private_key_pem; on edit, both empty keep the current one
    private_key_pem: str = ""
    remove_certificate: bool = False

    @classmethod
    def read(cls, form: FormData) -> "SubscriptionForm":
        types = [str(t) for t in form.getlist("activity_types")]
        if _text(form, "all_types") == ALL_TYPES:
            types = [ALL_TYPES]
        scheme = _text(form, "scheme") or "spec"
        return cls(url=_text(form, "url").strip(), activity_types=types,
                   scheme=scheme if scheme in SCHEMES else "spec", description=_text(form, "description"),
                   filter=_text(form, "filter").strip(), custom_headers=_text(form, "custom_headers").strip(),
                   remove_headers=_text(form, "remove_headers") == "yes",
                   certificate_pem=_text(form, "certificate_pem").strip(),
                   private_key_pem=_text(form, "private_key_pem").strip(),
                   remove_certificate=_text(form, "remove_certificate") == "yes")

    @classmethod
    def of(cls, s: pb.Subscription) -> "SubscriptionForm":
        return cls(url=s.url, activity_types=list(s.activity_types), scheme=SCHEME_SLUG.get(s.signature_scheme, "spec"),
                   description=s.description, filter=s.filter)

    @property
    def all_types(self) -> bool:
        return ALL_TYPES in self.activity_types

    def shown_back(self) -> "SubscriptionForm":
        """The form to render again after a refusal: as typed, less its secrets: header values
        (their names are kept; a line without a colon may be a pasted value, so it goes too) and
        the private key."""
        names = [line.partition(":")[0].strip() for line in self.custom_headers.splitlines() if ":" in line]
        return SubscriptionForm(url=self.url, activity_types=self.activity_types, scheme=self.scheme,
                                description=self.description, filter=self.filter,
                                custom_headers="\n".join(f"{n}: " for n in names if n),
                                remove_headers=self.remove_headers, certificate_pem=self.certificate_pem,
                                remove_certificate=self.remove_certificate)

    def headers(self) -> list[pb.CustomHeader]:
        """The typed custom headers; Refused (beside the field) for a line that is not `Name: value`."""
        found = []
        for number, line in enumerate(self.custom_headers.splitlines(), start=1):
            if not line.strip():
                continue
            name, colon, value = line.partition(":")
            if not colon or not name.strip():
                raise Refused(Refusal("invalid", "Not saved", f"Custom headers, line {number}: write each header as "
                                      "Name: value, one a line.", 422, field="custom_headers"))
            found.append(pb.CustomHeader(name=name.strip(), value=value.strip()))
        return found

    def certificate(self) -> pb.ClientCertificateUpload | None:
        if not self.certificate_pem and not self.private_key_pem:
            return None
        return pb.ClientCertificateUpload(certificate_pem=self.certificate_pem, private_key_pem=self.private_key_pem)

    def create_request(self) -> pb.CreateSubscriptionRequest:
        return pb.CreateSubscriptionRequest(url=self.url, activity_types=self.activity_types,
                                            description=self.description, signature_scheme=SCHEMES[self.scheme][0],
                                            filter=self.filter, custom_headers=self.headers(),
                                            client_certificate=self.certificate())

    def update_request(self, subscription_id: str) -> pb.UpdateSubscriptionRequest:
        """The fields the form always holds; the custom headers when new ones were typed or
        removal ticked, the certificate likewise (both at once is refused: which was meant?)."""
        mask = ["url", "activity_types", "description", "signature_scheme", "filter"]
        headers = self.headers()
        if headers and self.remove_headers:
            raise Refused(Refusal("invalid", "Not saved", "Custom headers: either type the new ones or tick removal, "
                                  "not both.", 422, field="custom_headers"))
        if headers or self.remove_headers:
            mask.append("custom_headers")
        certificate = self.certificate()
        if certificate is not None and self.remove_certificate:
            raise Refused(Refusal("invalid", "Not saved", "Client certificate: either paste a new one or tick removal, "
                                  "not both.", 422, field="client_certificate"))
        if certificate is not None or self.remove_certificate:
            mask.append("client_certificate")
        return pb.UpdateSubscriptionRequest(
            subscription_id=subscription_id, update_mask=mask, url=self.url, activity_types=self.activity_types,
            description=self.description, signature_scheme=SCHEMES[self.scheme][0], filter=self.filter,
            custom_headers=headers, client_certificate=certificate)
