"""Webhooks: subscriptions, signed deliveries that are never lost, the retry schedule, the
delivery log, and the platform activities they carry."""
