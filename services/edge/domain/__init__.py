"""The edge's rules with no I/O: callers, credentials' pairing, scopes, the IP allowlist, the
route table, rate-limit decisions, the partner error codes."""
