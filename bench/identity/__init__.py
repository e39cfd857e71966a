"""`python -m bench.identity`: token issuance and API-key verification through real gRPC."""
