"""docs/operators.md: its settings reference matches services/kit/settings.py, and it names
every Secret and workload the manifests have."""

from __future__ import annotations

from tests.deploy import settings_doc
from tests.deploy.manifests import OVERLAYS, WORKLOAD_KINDS, containers, of_kind, pod_spec, render

TEXT = settings_doc.DOC.read_text()


def test_every_setting_is_in_the_reference_with_its_default() -> None:
    documented = settings_doc.documented_rows(TEXT)
    expected = settings_doc.expected_defaults()
    missing = sorted(set(expected) - set(documented))
    assert not missing, f"add to docs/operators.md (python -m tests.deploy.settings_doc): {missing}"
    wrong = {v: (documented[v][0], d) for v, d in expected.items() if documented[v][0] != d}
    assert not wrong, f"documented default differs from the code (doc, code): {wrong}"
    assert all(meaning.strip() and meaning.strip() != "TODO" for _, meaning in documented.values())


def test_the_reference_lists_no_setting_that_does_not_exist() -> None:
    stale = sorted(set(settings_doc.documented_rows(TEXT)) - set(settings_doc.expected_defaults()))
    assert not stale, f"no such setting: {stale}"


def test_the_generated_table_is_the_documented_one() -> None:
    assert settings_doc.table(TEXT) in TEXT


def test_every_secret_the_manifests_read_is_documented() -> None:
    names = {i["spec"]["tls"][0]["secretName"] for i in of_kind(render("prod"), "Ingress")}
    assert names == {"trellis-edge-tls", "trellis-console-tls"}
    for overlay in OVERLAYS:
        objects = render(overlay)
        for workload in of_kind(objects, *WORKLOAD_KINDS):
            for container in containers(workload):
                names |= {v["valueFrom"]["secretKeyRef"]["name"] for v in container.get("env", [])
                          if "secretKeyRef" in v.get("valueFrom", {})}
            names |= {v["secret"]["secretName"] for v in pod_spec(workload).get("volumes", []) if "secret" in v}
        for cluster in of_kind(objects, "Cluster"):
            names |= {r["passwordSecret"]["name"].replace(r["name"], "<service>") for r in cluster["spec"]["managed"]["roles"]}
    missing = sorted(n for n in names if f"`{n}`" not in TEXT)
    assert not missing, missing


def test_the_doc_covers_what_operators_do() -> None:
    for heading in ("## Deploying", "### Secrets", "## Settings reference", "## Scaling", "## Backups",
                    "## Key rotation", "## Upgrading", "## Running locally", "## The console"):
        assert f"\n{heading}\n" in TEXT, heading
    for phrase in ("SKIP LOCKED", "durable", "TRELLIS_KEK_PREVIOUS", "trellis keys rotate", "trellis migrate",
                   "make run", "no container engine", "docker run IMAGE console", "TRELLIS_CONSOLE_OIDC_CLIENT_ID",
                   "/signin/callback"):
        assert phrase in TEXT, phrase
