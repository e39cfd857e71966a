"""Identity: partner credentials (API keys, OAuth clients), access tokens and their signing keys."""
