"""What the pipeline's ports are made of: gRPC clients of identity, registry and webhooks, the
caches, the NATS invalidator, the JetStream rate limiter, the API log publisher, the metrics."""
