"""Edge benchmark: `python -m bench.edge` (see __main__.py)."""
