"""What the registry's ports are made of: its tables and unit of work, its outbox events, its
gRPC client of identity."""
