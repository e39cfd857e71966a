"""Benchmark of the logs service: ingest from JetStream and filtered queries (see __main__)."""
