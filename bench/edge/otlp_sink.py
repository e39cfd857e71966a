"""An OTLP/gRPC trace collector that accepts and discards what it is sent: the destination of
the benchmark's traced edge, so tracing is priced as it runs in production (spans recorded,
batched and exported), not as a no-op.

    python -m bench.edge.otlp_sink --port PORT
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    async def Export(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802 - the gRPC method name
        return trace_service_pb2.ExportTraceServiceResponse()


async def serve(port: int) -> None:
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
