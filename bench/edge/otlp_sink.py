"""An OTLP/gRPC trace collector that accepts and discards what it is sent: the destination of
the benchmark's traced edge, so tracing is priced as it runs in production (spans recorded,
batched and exported), not as a no-op.

    python -m bench.edge.otlp_sink --port PORT [--count-file PATH]

With --count-file, the number of spans received so far is written there after each export.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, count_file: Path | None) -> None:
        self.count_file, self.spans = count_file, 0

    async def Export(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802 - the gRPC method name
        if self.count_file is not None:
            self.spans += sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
            tmp = self.count_file.with_suffix(".tmp")
            tmp.write_text(str(self.spans))
            tmp.replace(self.count_file)
        return trace_service_pb2.ExportTraceServiceResponse()


async def serve(port: int, count_file: Path | None) -> None:
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(count_file), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count-file", type=Path)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.count_file))


if __name__ == "__main__":
    main()
