"""The ``agentsight-otel`` command: ``demo`` and ``serve``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .version import __version__


def _serve(args: argparse.Namespace) -> int:
    from .localserver import LocalServer, generate_api_key, serve

    key = args.api_key or generate_api_key()

    def banner(server: LocalServer) -> None:
        print(f"AgentSight-compatible server listening on {server.url} (database: {args.db})")
        print("Point the tracker or exporter at it with:")
        print(f"  export AGENTSIGHT_API_ENDPOINT={server.url}")
        print(f"  export AGENTSIGHT_API_KEY={key}   # a key for this local server only")
        sys.stdout.flush()

    serve(args.host, args.port, api_keys=[key], db_path=args.db, gzip_ingest=not args.no_gzip, on_ready=banner)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(keep_serving=args.keep_serving)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentsight-otel", description="Ship AI-agent conversations to AgentSight.")
    parser.add_argument("--version", action="version", version=f"agentsight-otel {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="track a sample conversation and print what AgentSight stored")
    demo.add_argument("--keep-serving", action="store_true", help="keep the local server running afterwards")
    demo.set_defaults(func=_demo)

    serve = commands.add_parser("serve", help="run the local AgentSight-compatible server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8787, help="port (default 8787; 0 picks a free one)")
    serve.add_argument("--db", default="agentsight-local.db", help="SQLite file (default agentsight-local.db)")
    serve.add_argument("--api-key", help="the key clients must send (default: a new random key, printed)")
    serve.add_argument("--no-gzip", action="store_true", help="do not advertise gzip-ingest")
    serve.set_defaults(func=_serve)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
