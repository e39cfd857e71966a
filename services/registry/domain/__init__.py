"""The registry's rules: integrations, their lifecycle, the catalogues of vendors and scopes.
Plain Python: nothing here imports gRPC, SQLAlchemy, NATS or protobuf."""
