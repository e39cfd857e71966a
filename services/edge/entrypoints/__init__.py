"""The edge's ASGI application, its public endpoints (OAuth, OpenAPI, the partner webhook
routes), its settings and main."""
