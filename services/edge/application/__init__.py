"""The partner pipeline and the built-in answers, reaching credentials, integrations, the rate
limiter and upstreams through the ports in ports.py."""
