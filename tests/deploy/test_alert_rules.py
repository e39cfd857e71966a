"""The Prometheus alerting rules shipped in deploy/k8s (the `trellis-prometheus-rules` ConfigMap
of every overlay): each rule is complete, its PromQL lexes cleanly, and every series it reads
is one a Trellis service serves (services/kit/metrics.py, services/webhooks/adapters/metrics.py),
so a renamed metric fails here rather than silencing an alert in production."""

from __future__ import annotations

import re

import pytest
import yaml
from prometheus_client import generate_latest
from pygments.lexers.promql import PromQLLexer
from pygments.token import Error, Name

from services.kit.metrics import ServiceMetrics
from services.webhooks.adapters.metrics import WebhookMetrics
from tests.deploy.manifests import OVERLAYS, named, render

SUFFIXES = ("", "_total", "_count", "_sum", "_bucket", "_created")


def served_series() -> set[str]:
    """Every series name a webhooks process's registry exposes (the kit's and its own)."""
    metrics = ServiceMetrics("webhooks")
    WebhookMetrics(metrics)
    text = generate_latest(metrics.registry).decode()
    families = re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE)
    return {family + suffix for family in families for suffix in SUFFIXES}


def rules(overlay: str) -> list[dict]:  # type: ignore[type-arg]
    config = named(render(overlay), "ConfigMap", "trellis-prometheus-rules")
    document = yaml.safe_load(config["data"]["trellis.rules.yaml"])
    return [rule for group in document["groups"] for rule in group["rules"]]


def series_in(expr: str) -> set[str]:
    return {m for m in re.findall(r"\b(trellis_[a-z0-9_]+)\b", expr)}


def lex_problems(expr: str) -> list[str]:
    tokens = list(PromQLLexer().get_tokens(expr))
    problems = [value for token, value in tokens if token in Error]
    depth = 0
    for char in expr:
        depth += {"(": 1, ")": -1, "[": 1, "]": -1, "{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            problems.append("a bracket closes that never opened")
    if depth:
        problems.append("unbalanced brackets")
    if not any(token in Name and value.startswith("trellis_") for token, value in tokens):
        problems.append("reads no trellis_ series")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rule_is_complete_and_reads_only_series_trellis_serves(overlay: str) -> None:
    served = served_series()
    found = rules(overlay)
    assert found, "no alerting rules"
    for rule in found:
        name = rule.get("alert")
        assert name and name.startswith("Trellis"), rule
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: a `for` duration"
        assert rule.get("labels", {}).get("severity") in ("warning", "critical"), name
        assert rule.get("annotations", {}).get("summary"), name
        assert not lex_problems(rule["expr"]), (name, lex_problems(rule["expr"]))
        unknown = series_in(rule["expr"]) - served
        assert not unknown, f"{name} reads series no service serves: {sorted(unknown)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_failing_subscriptions_and_consumer_lag_are_alerted(overlay: str) -> None:
    read = set().union(*(series_in(rule["expr"]) for rule in rules(overlay)))
    assert {"trellis_webhooks_failing_subscriptions", "trellis_consumer_pending_messages"} <= read


def test_the_checks_catch_a_renamed_metric_and_broken_promql() -> None:
    assert series_in("max(trellis_webhooks_failing_subscription) > 0") - served_series() == {
        "trellis_webhooks_failing_subscription"}
    assert lex_problems("max(trellis_webhooks_queue_depth > 0")
