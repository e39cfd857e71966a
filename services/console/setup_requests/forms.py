"""The setup request form as typed, and turned into a registry request. Only reading the form
happens here; every rule about the values (required, lengths, URLs, emails) is the registry's.

Secret connection details are sent once and never kept: the form a refusal shows again holds
none of them (`without_secrets`), only which were typed, so the page can say "enter it again"."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from starlette.datastructures import FormData

from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.kit.ids import MAX_REQUEST_ID_LENGTH

FIELD_PREFIX = "connection."


@dataclass
class SetupForm:
    prebuilt_id: str = ""
    connection: dict[str, str] = field(default_factory=dict)
    contact_email: str = ""
    notes: str = ""
    intent: str = ""
    secrets_typed: tuple[str, ...] = ()

    @classmethod
    def read(cls, form: FormData, entry: pb.PrebuiltIntegration) -> "SetupForm":
        """The entry's fields as typed (a field the entry does not list is not read)."""
        connection = {f.name: str(form.get(FIELD_PREFIX + f.name) or "") for f in entry.fields}
        typed = tuple(f.name for f in entry.fields if f.secret and connection[f.name])
        return cls(prebuilt_id=entry.id, connection=connection, contact_email=str(form.get("contact_email") or ""),
                   notes=str(form.get("notes") or ""), intent=str(form.get("intent") or ""), secrets_typed=typed)

    def without_secrets(self, entry: pb.PrebuiltIntegration) -> "SetupForm":
        """The same form with every secret value gone: what a page may show again."""
        secret = {f.name for f in entry.fields if f.secret}
        return replace(self, connection={k: ("" if k in secret else v) for k, v in self.connection.items()})

    def create_request(self) -> pb.CreateSetupRequestRequest:
        """Every field, empty ones included (the registry says which are required); the form's
        one-time id as request_id, so a second submit of the same page is the same request."""
        return pb.CreateSetupRequestRequest(prebuilt_id=self.prebuilt_id, connection=self.connection,
                                            contact_email=self.contact_email, notes=self.notes,
                                            request_id=self.intent[:MAX_REQUEST_ID_LENGTH])
