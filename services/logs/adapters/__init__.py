"""What the logs service's ports are made of: its tables, repositories and unit of work, its
NATS consumers."""
