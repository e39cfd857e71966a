"""The edge's own HTTP/1.1 layer: the server protocol under uvicorn, the coalescing transport
both sides write through, the upstream client and the proxy that joins them. Its invariants,
and the tests that gate an upgrade of uvicorn or httptools, are in README.md beside this file."""
