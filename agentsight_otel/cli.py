"""The ``agentsight-otel`` command: ``demo`` and ``serve``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .config import redact_keys
from .spool import Spool
from .version import __version__


def _serve(args: argparse.Namespace) -> int:
    from .localserver import Faults, LocalServer, generate_api_key, serve

    try:
        faults = Faults(
            status_rates=dict(args.fail or []),
            retry_after=args.retry_after,
            latency=args.latency,
            reset_rate=args.reset_rate,
            accept_then_fail_rate=args.accept_then_fail,
            accept_then_fail_mode=args.accept_then_fail_mode,
            max_ingest_bytes=args.max_ingest_bytes,
            outage_seconds=args.outage,
            outage_mode=args.outage_mode,
            paths=tuple(args.fault_path) if args.fault_path else Faults().paths,
            seed=args.fault_seed,
        )
    except ValueError as exc:  # combinations the per-flag checks cannot see, e.g. status rates adding up past 1
        print(f"agentsight-otel serve: error: {exc}", file=sys.stderr)
        return 2
    key = args.api_key or generate_api_key()

    def banner(server: LocalServer) -> None:
        print(f"AgentSight-compatible server listening on {server.url} (database: {args.db})")
        print(f"Transcript viewer: {server.url}/")
        print("Point the tracker or exporter at it with:")
        print(f"  export AGENTSIGHT_API_ENDPOINT={server.url}")
        print(f"  export AGENTSIGHT_API_KEY={key}   # a key for this local server only")
        if faults.active:
            print(f"Injecting faults: {faults.describe()}")
        sys.stdout.flush()

    serve(
        args.host,
        args.port,
        api_keys=[key],
        db_path=args.db,
        gzip_ingest=not args.no_gzip,
        faults=faults if faults.active else None,
        on_ready=banner,
    )
    return 0


def _open_spools(args: argparse.Namespace) -> list[Spool]:
    from .config import resolve_settings
    from .spool import default_spool_dir, spool_path

    directory = Path(args.dir or os.environ.get("AGENTSIGHT_SPOOL_DIR") or default_spool_dir())
    if args.endpoint:
        paths = [spool_path(directory, args.endpoint.rstrip("/"))]
    elif args.action in ("status", "dead"):
        paths = sorted(directory.glob("spool-*.db"))
    else:
        paths = [spool_path(directory, resolve_settings(api_key=None).endpoint)]
    return [Spool(p) for p in paths if p.exists()]


def _age(seconds_since_epoch: float | None) -> str:
    if seconds_since_epoch is None:
        return "-"
    age = max(time.time() - seconds_since_epoch, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if age >= size:
            return f"{age / size:.1f}{unit} ago"
    return f"{age:.0f}s ago"


def _spool_cmd(args: argparse.Namespace) -> int:
    spools = _open_spools(args)
    if not spools:
        print("No spool found: nothing is waiting.")
        return 0
    for spool in spools:
        stats = spool.stats()
        print(f"{spool.path}  (endpoint: {spool.endpoint or 'unknown'})")
        if args.action == "status":
            print(
                f"  waiting:    {stats.entries} entr{'y' if stats.entries == 1 else 'ies'}, {stats.bytes} bytes, "
                f"{stats.conversations} conversation(s), oldest {_age(stats.oldest)}"
            )
            print(f"  last error: {redact_keys(stats.last_error or '-')}")  # written by any earlier version
            print(f"  refused:    {stats.dead} dead letter(s), {stats.dead_bytes} bytes")
            print(f"  dropped:    {stats.dropped_entries} entr(ies), {stats.dropped_bytes} bytes (spool was full)")
        elif args.action == "dead":
            for dead in spool.dead_letters(limit=args.limit):
                print(
                    f"  #{dead.id} {dead.kind} conversation={dead.conversation_id} status={dead.status} "
                    f"{dead.size}B: {redact_keys(dead.reason or '')}"
                )
        elif args.action == "requeue":
            print(f"  moved {spool.requeue_dead()} dead letter(s) back into the queue")
        elif args.action == "discard":
            if not args.yes:
                print("  refusing to delete without --yes")
                return 2
            print(f"  deleted {spool.discard(dead=args.dead)} {'dead letter' if args.dead else 'entr'}(ies)")
        elif args.action == "replay":
            return _replay(spool, args.timeout)
    return 0


def _replay(spool: Spool, timeout: float) -> int:
    from .exporter import AgentSightSpanExporter

    directory = str(spool.path.parent)  # the spool that was shown, not the default one
    exporter = (
        AgentSightSpanExporter(endpoint=spool.endpoint, spool_dir=directory)
        if spool.endpoint
        else AgentSightSpanExporter(spool_dir=directory)
    )
    if exporter.spool is None:
        print("  cannot replay: set AGENTSIGHT_API_KEY (and AGENTSIGHT_API_ENDPOINT) first")
        return 2
    before = spool.stats().entries
    done = exporter.force_flush(int(timeout * 1000))
    left = spool.stats()
    print(
        f"  replayed {before - left.entries} of {before} entr(ies); {left.entries} still waiting"
        + ("" if done else f" (last error: {left.last_error})")
    )
    exporter.shutdown()
    return 0 if done else 1


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(keep_serving=args.keep_serving)


def _tail(args: argparse.Namespace) -> int:
    from .tail import run

    return run(
        url=args.url, api_key=args.api_key, conversation=args.conversation, interval=args.interval, last=args.lines
    )


def _bridge(args: argparse.Namespace) -> int:
    try:
        from .bridge import Bridge, resolve_bridge_settings
        from .bridge.settings import parse_byte_count
    except ImportError as exc:
        print(
            f"agentsight-otel bridge: error: {exc.name or exc} is missing; "
            "install the bridge extra: pip install 'agentsight-otel[bridge]'",
            file=sys.stderr,
        )
        return 2
    try:
        settings = resolve_bridge_settings(
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port,
            path=args.path,
            tokens=tuple(args.token or ()),
            auth_header=args.auth_header,
            max_body_bytes=parse_byte_count(args.max_body_bytes) if args.max_body_bytes else None,
            max_decompressed_bytes=(
                parse_byte_count(args.max_decompressed_bytes) if args.max_decompressed_bytes else None
            ),
            max_queued_spans=args.max_queued_spans,
            max_batch_spans=args.max_batch_spans,
            export_workers=args.export_workers,
            request_timeout=args.request_timeout,
            idle_timeout=args.idle_timeout,
            ack_timeout=args.ack_timeout,
            retry_after=args.retry_after,
            drain_timeout=args.drain_timeout,
            max_connections=args.max_connections,
        )
        options = {k: v for k, v in (("endpoint", args.endpoint), ("spool_dir", args.spool_dir)) if v}
        bridge = Bridge(settings, **options)
    except (ValueError, TypeError) as exc:
        print(f"agentsight-otel bridge: error: {exc}", file=sys.stderr)
        return 2

    def banner(running: Bridge) -> None:
        exporter = running.exporter
        print(f"agentsight-otel bridge: OTLP/HTTP on {running.traces_url} (protobuf and JSON; gzip, deflate)")
        if running.grpc_port is not None:
            print(f"agentsight-otel bridge: OTLP/gRPC on {settings.host}:{running.grpc_port}")
        print(f"  shipping to {exporter!r}")
        print(f"  auth: {'bearer token required' if settings.tokens else 'none (no token configured)'}")
        print("  health: GET " + running.url + "/health; stop with Ctrl-C or SIGTERM (drains accepted spans)")
        sys.stdout.flush()

    try:
        drained = bridge.serve_until_signalled(on_ready=banner)
    except (RuntimeError, OSError) as exc:
        print(f"agentsight-otel bridge: error: {exc}", file=sys.stderr)
        bridge.stop(timeout=1)
        return 2
    return 0 if drained else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentsight-otel", description="Ship AI-agent conversations to AgentSight.")
    parser.add_argument("--version", action="version", version=f"agentsight-otel {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="track a sample conversation and print what AgentSight stored")
    demo.add_argument("--keep-serving", action="store_true", help="keep the local server running afterwards")
    demo.set_defaults(func=_demo)

    tail = commands.add_parser("tail", help="follow the local server in the terminal, one line per new item")
    tail.add_argument("--url", help="the server (default AGENTSIGHT_API_ENDPOINT, else http://127.0.0.1:8787)")
    tail.add_argument(
        "--api-key", help="its key (default AGENTSIGHT_API_KEY; not needed when the server is bound to loopback)"
    )
    tail.add_argument("--conversation", metavar="ID", help="follow only this conversation id")
    tail.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between polls (default 1)")
    tail.add_argument(
        "--lines", type=int, default=10, metavar="N", help="items already stored to show first (default 10; 0: none)"
    )
    tail.set_defaults(func=_tail)

    serve = commands.add_parser("serve", help="run the local AgentSight-compatible server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8787, help="port (default 8787; 0 picks a free one)")
    serve.add_argument("--db", default="agentsight-local.db", help="SQLite file (default agentsight-local.db)")
    serve.add_argument("--api-key", help="the key clients must send (default: a new random key, printed)")
    serve.add_argument("--no-gzip", action="store_true", help="do not advertise gzip-ingest")
    from .localserver import faults as fault_args  # argparse type= checkers of the fault-injection flags

    chaos = serve.add_argument_group(
        "fault injection (for testing clients; affects /api/ingest/ and /api/attachments/)"
    )
    chaos.add_argument(
        "--fail",
        action="append",
        type=fault_args.arg_status_rate,
        metavar="STATUS=RATE",
        help="answer this share of requests with STATUS instead of processing them (repeatable: --fail 503=0.1)",
    )
    chaos.add_argument(
        "--retry-after",
        type=fault_args.arg_retry_after,
        metavar="VALUE",
        help="Retry-After on injected 429/503: seconds, an HTTP date, or date:N (N seconds ahead)",
    )
    chaos.add_argument(
        "--latency", type=fault_args.arg_latency, default=0.0, metavar="SECONDS", help="delay: SECONDS or MIN,MAX"
    )
    chaos.add_argument(
        "--reset-rate", type=fault_args.arg_rate, default=0.0, metavar="RATE", help="share of connections reset"
    )
    chaos.add_argument(
        "--accept-then-fail",
        type=fault_args.arg_rate,
        default=0.0,
        metavar="RATE",
        help="share of requests stored and then answered with a failure anyway",
    )
    chaos.add_argument(
        "--accept-then-fail-mode", choices=fault_args.FAILURE_MODES, default="503", help="503 (default) or reset"
    )
    chaos.add_argument(
        "--max-ingest-bytes",
        type=fault_args.arg_byte_count,
        metavar="N",
        help="answer 413 to ingest bodies over N bytes on the wire",
    )
    chaos.add_argument(
        "--outage", type=fault_args.arg_seconds, default=0.0, metavar="SECONDS", help="an outage from start"
    )
    chaos.add_argument(
        "--outage-mode", choices=fault_args.FAILURE_MODES, default="reset", help="reset (default) or 503"
    )
    chaos.add_argument(
        "--fault-path",
        action="append",
        type=fault_args.arg_path,
        metavar="PATH",
        help="a path the faults apply to, instead of the defaults (repeatable, e.g. --fault-path /api/me/)",
    )
    chaos.add_argument("--fault-seed", type=int, metavar="N", help="seed the fault randomness for a reproducible run")
    serve.set_defaults(func=_serve)

    spool = commands.add_parser("spool", help="show, replay or discard what waits to be delivered")
    spool.add_argument(
        "action",
        nargs="?",
        default="status",
        choices=("status", "dead", "replay", "requeue", "discard"),
        help="status (default), dead (list refused data), replay (send now), requeue (retry refused data), "
        "discard (delete; needs --yes)",
    )
    spool.add_argument(
        "--dir",
        help="spool directory (default: AGENTSIGHT_SPOOL_DIR, else $XDG_STATE_HOME/agentsight-otel, "
        "else ~/.local/state/agentsight-otel)",
    )
    spool.add_argument("--endpoint", help="the AgentSight endpoint whose spool to use (default: all, or configured)")
    spool.add_argument("--dead", action="store_true", help="with discard: delete the dead letters instead")
    spool.add_argument("--yes", action="store_true", help="with discard: really delete")
    spool.add_argument("--limit", type=int, default=50, help="with dead: how many to list (default 50)")
    spool.add_argument("--timeout", type=float, default=30.0, help="with replay: seconds to try (default 30)")
    spool.set_defaults(func=_spool_cmd)

    bridge = commands.add_parser(
        "bridge", help="receive OTLP traces (e.g. from an OpenTelemetry Collector) and ship them to AgentSight"
    )
    bridge.add_argument("--host", help="address to bind (default 127.0.0.1; AGENTSIGHT_BRIDGE_HOST)")
    bridge.add_argument(
        "--port", type=int, help="OTLP/HTTP port (default 4319; 0 picks a free one; AGENTSIGHT_BRIDGE_PORT)"
    )
    bridge.add_argument(
        "--grpc-port",
        type=int,
        help="also receive OTLP/gRPC on this port (needs grpcio; e.g. 4320; AGENTSIGHT_BRIDGE_GRPC_PORT)",
    )
    bridge.add_argument("--path", help="OTLP/HTTP traces path (default /v1/traces)")
    bridge.add_argument(
        "--token",
        action="append",
        help="require this bearer token (repeatable; AGENTSIGHT_BRIDGE_TOKEN, comma-separated, keeps it out of ps)",
    )
    bridge.add_argument(
        "--auth-header", metavar="NAME", help="also accept the token in this header, e.g. x-agentsight-token"
    )
    bridge.add_argument("--max-body-bytes", metavar="N", help="largest request body on the wire (default 32MiB)")
    bridge.add_argument("--max-decompressed-bytes", metavar="N", help="largest body once decompressed (default 64MiB)")
    bridge.add_argument("--max-queued-spans", type=int, help="spans waiting for export before 503s (default 50000)")
    bridge.add_argument("--max-batch-spans", type=int, help="most spans handed to the exporter at once (default 10000)")
    bridge.add_argument(
        "--export-workers", type=int, help="export lanes, each exporting its traces in order (default 2)"
    )
    bridge.add_argument("--request-timeout", type=float, help="seconds to receive one request (default 30)")
    bridge.add_argument("--idle-timeout", type=float, help="seconds a keep-alive connection may idle (default 120)")
    bridge.add_argument("--ack-timeout", type=float, help="seconds a request waits for its export (default 25)")
    bridge.add_argument("--retry-after", type=int, help="Retry-After seconds on 503 answers (default 2)")
    bridge.add_argument("--drain-timeout", type=float, help="seconds to export accepted spans at shutdown (default 30)")
    bridge.add_argument("--max-connections", type=int, help="open connections at most (default 128)")
    bridge.add_argument(
        "--endpoint", help="AgentSight endpoint (default AGENTSIGHT_API_ENDPOINT); key: AGENTSIGHT_API_KEY"
    )
    bridge.add_argument("--spool-dir", help="spool directory for undeliverable data (default AGENTSIGHT_SPOOL_DIR)")
    bridge.set_defaults(func=_bridge)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except ValueError as exc:  # spool: a setting from the environment or a .env file that cannot be used
        if args.verbose or args.command != "spool":  # other commands check their settings themselves
            raise
        print(f"agentsight-otel {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
