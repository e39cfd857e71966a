"""The logs service's use cases (handlers), the commands they take, and the ports they need.
Imports the domain and the kit's pure parts; never SQLAlchemy, gRPC, aiohttp or NATS."""
