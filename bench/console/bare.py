"""The baseline of bench.console: a bare Starlette page (one route, a fixed HTML body of the
size asked for) served by uvicorn the way the console is (httptools, no access log).

    python -m bench.console.bare --port N --bytes B
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route


def make_app(size: int) -> Starlette:
    body = "<!doctype html><title>bare</title><main>" + "x" * max(0, size - 60) + "</main>"

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(body)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    return Starlette(routes=[Route("/page", page), Route("/healthz", healthz)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bytes", type=int, default=20_000)
    args = parser.parse_args()
    uvicorn.run(make_app(args.bytes), host="127.0.0.1", port=args.port, http="httptools", ws="none",
                lifespan="off", log_config=None, access_log=False, server_header=False)


if __name__ == "__main__":
    main()
