"""EXAMPLE ONLY: a stand-in upstream behind the Trellis edge (see app.py and README.md)."""
