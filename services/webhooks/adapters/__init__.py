"""What webhooks talks to: its tables, outbox, the delivery client, the registry, NATS."""
