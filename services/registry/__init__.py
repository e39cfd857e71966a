"""The registry service: integrations, their lifecycle, scopes, limits, allowlist and owner."""
