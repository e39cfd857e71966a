"""Sign-in: OpenID Connect against the platform's identity provider (oidc.py), or, in the
embedded mode only, a local sign-in that mints actor tokens with the launcher's key (local.py).
routes.py serves both and the guard every page passes (`Auth.require`)."""
