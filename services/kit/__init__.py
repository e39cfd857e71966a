"""The runtime every Trellis service shares: settings, storage, bus, outbox, telemetry,
gRPC bootstrap and actor authentication. No domain logic lives here."""
