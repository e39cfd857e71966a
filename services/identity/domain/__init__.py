"""Identity's rules in plain Python: credentials, scopes, access-token claims, signing-key lifecycle."""
