"""The HTTP edge for partners: authentication, limits, routes, proxying and request logging.

domain/ the rules (callers, scopes, the allowlist, the route table, rate-limit decisions, error
codes); application/ the partner pipeline and the ports it needs; adapters/ the peers, caches,
invalidator, rate limiter, API log and metrics; http/ the HTTP layer of our own (its README);
entrypoints/ the ASGI application, the public endpoints, the settings and main."""
