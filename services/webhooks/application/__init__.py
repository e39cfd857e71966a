"""Webhooks' use cases: commands, handlers and the ports they need."""
