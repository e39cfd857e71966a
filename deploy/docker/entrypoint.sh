#!/bin/sh
# Entrypoint of the Trellis image: runs one service, the migrations, or the CLI, by name.
set -eu

usage() {
    cat <<'USAGE'
usage: IMAGE COMMAND [ARGS...]

  identity | registry | webhooks | logs   run that gRPC service (python -m services.<name>)
  edge                                    run the HTTP edge (python -m services.edge)
  console                                 run the web console (python -m services.console)
  migrate [SERVICE ...]                   apply database migrations (trellis migrate)
  trellis ARGS...                         run the trellis command line
  help                                    this text

Settings come from TRELLIS_* environment variables; see docs/operators.md.
USAGE
}

command="${1:-help}"
[ "$#" -gt 0 ] && shift

case "$command" in
    identity | registry | webhooks | logs | edge | console)
        exec python -m "services.$command" "$@"
        ;;
    migrate)
        exec trellis migrate "$@"
        ;;
    trellis)
        exec trellis "$@"
        ;;
    help | -h | --help)
        usage
        ;;
    *)
        echo "trellis-entrypoint: unknown command '$command'" >&2
        usage >&2
        exit 64
        ;;
esac
