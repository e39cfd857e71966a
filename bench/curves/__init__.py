"""Benchmarks that print how cost grows with work, one curve per run (issue 16)."""
