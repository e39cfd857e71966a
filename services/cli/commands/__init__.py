"""The `trellis` subcommands. Each module's `register(subparsers, common)` adds its parsers,
each with `handler(args, session) -> exit code` as a default."""
