"""The logs service's rules: request-log filters and cursors, who may read, the audit chain,
the quarterly review. Plain Python: nothing here imports gRPC, SQLAlchemy, NATS or protobuf."""
