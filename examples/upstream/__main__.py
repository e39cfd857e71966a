"""EXAMPLE ONLY: `python -m examples.upstream [--port 8090]` serves the example upstream on loopback."""

from __future__ import annotations

import argparse

from aiohttp import web

from examples.upstream.app import make_app

parser = argparse.ArgumentParser(description="EXAMPLE upstream behind the Trellis edge (made-up data, loopback only)")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8090)
args = parser.parse_args()
web.run_app(make_app(), host=args.host, port=args.port, access_log=None)
