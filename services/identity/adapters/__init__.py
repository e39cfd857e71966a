"""What identity talks to: its tables and unit of work, the outbox events, key signing, the
registry's events and an external issuer's JWKS."""
