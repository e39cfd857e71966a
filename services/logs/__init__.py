"""The logs service: the API request log, the hash-chained audit trail and the quarterly review."""
