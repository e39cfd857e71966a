"""The quarterly access review: the report, its checklist, CSV and a printable page."""
