"""The audit trail: entries, the chain check, the signed checkpoint."""
