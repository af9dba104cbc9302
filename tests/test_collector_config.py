"""collector-config/: each file parses, names only real components and fields, and points at the bridge's defaults.

The lists below are the components and fields these configs rely on, taken from the upstream READMEs (receiver
otlp, processors memory_limiter and batch, exporters otlphttp/otlp and exporterhelper, contrib exporter
loadbalancing, contrib extension file_storage, extension health_check) and from ``rotel-agent start --help`` of
rotel 0.0.1a15 (agent alpha10). A typo in a config (``retry_on_faliure``) or an invented field fails here instead
of at a collector's start-up.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

from agentsight_otel.bridge import DEFAULT_GRPC_PORT, DEFAULT_PATH, DEFAULT_PORT  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parent.parent / "collector-config"
LEAF = "leaf"  # a scalar or a list of scalars
ANY_MAP = "any-map"  # free-form keys (headers)

DURATION = re.compile(r"^\d+(\.\d+)?(ns|us|µs|ms|s|m|h)$|^0$")

TLS_CLIENT = {
    "insecure": LEAF,
    "insecure_skip_verify": LEAF,
    "ca_file": LEAF,
    "cert_file": LEAF,
    "key_file": LEAF,
    "server_name_override": LEAF,
    "min_version": LEAF,
}
RETRY_ON_FAILURE = {
    "enabled": LEAF,
    "initial_interval": LEAF,
    "randomization_factor": LEAF,
    "multiplier": LEAF,
    "max_interval": LEAF,
    "max_elapsed_time": LEAF,
}
SENDING_QUEUE = {
    "enabled": LEAF,
    "num_consumers": LEAF,
    "queue_size": LEAF,
    "storage": LEAF,
    "sizer": LEAF,
    "blocking": LEAF,
    "block_on_overflow": LEAF,
    "wait_for_result": LEAF,
}
OTLPHTTP_EXPORTER = {
    "endpoint": LEAF,
    "traces_endpoint": LEAF,
    "encoding": LEAF,
    "compression": LEAF,
    "timeout": LEAF,
    "headers": ANY_MAP,
    "tls": TLS_CLIENT,
    "read_buffer_size": LEAF,
    "write_buffer_size": LEAF,
    "retry_on_failure": RETRY_ON_FAILURE,
    "sending_queue": SENDING_QUEUE,
}
OTLP_GRPC_EXPORTER = {
    "endpoint": LEAF,
    "compression": LEAF,
    "timeout": LEAF,
    "headers": ANY_MAP,
    "tls": TLS_CLIENT,
    "balancer_name": LEAF,
    "wait_for_ready": LEAF,
    "retry_on_failure": RETRY_ON_FAILURE,
    "sending_queue": SENDING_QUEUE,
}
KNOWN = {
    "receivers": {
        "otlp": {
            "protocols": {
                "grpc": {"endpoint": LEAF, "max_recv_msg_size_mib": LEAF, "transport": LEAF},
                "http": {"endpoint": LEAF, "traces_url_path": LEAF, "max_request_body_size": LEAF},
            }
        },
    },
    "processors": {
        "memory_limiter": {
            "check_interval": LEAF,
            "limit_mib": LEAF,
            "spike_limit_mib": LEAF,
            "limit_percentage": LEAF,
            "spike_limit_percentage": LEAF,
        },
        "batch": {
            "timeout": LEAF,
            "send_batch_size": LEAF,
            "send_batch_max_size": LEAF,
            "metadata_keys": LEAF,
            "metadata_cardinality_limit": LEAF,
        },
    },
    "exporters": {
        "otlphttp": OTLPHTTP_EXPORTER,
        "otlp": OTLP_GRPC_EXPORTER,
        "loadbalancing": {
            "routing_key": LEAF,
            "timeout": LEAF,
            "retry_on_failure": RETRY_ON_FAILURE,
            "sending_queue": SENDING_QUEUE,
            "protocol": {"otlp": {k: v for k, v in OTLP_GRPC_EXPORTER.items() if k != "endpoint"}},
            "resolver": {
                "static": {"hostnames": LEAF},
                "dns": {"hostname": LEAF, "port": LEAF, "interval": LEAF, "timeout": LEAF},
                "k8s": {"service": LEAF, "ports": LEAF, "timeout": LEAF},
            },
        },
        "debug": {"verbosity": LEAF},
    },
    "extensions": {
        "file_storage": {
            "directory": LEAF,
            "timeout": LEAF,
            "fsync": LEAF,
            "create_directory": LEAF,
            "directory_permissions": LEAF,
            "compaction": {
                "on_start": LEAF,
                "on_rebound": LEAF,
                "directory": LEAF,
                "max_transaction_size": LEAF,
                "rebound_needed_threshold_mib": LEAF,
                "rebound_trigger_threshold_mib": LEAF,
                "check_interval": LEAF,
                "cleanup_on_start": LEAF,
            },
        },
        "health_check": {"endpoint": LEAF, "path": LEAF},
    },
}
SERVICE = {
    "extensions": LEAF,
    "pipelines": {"traces": {"receivers": LEAF, "processors": LEAF, "exporters": LEAF}},
    "telemetry": {"logs": {"level": LEAF, "encoding": LEAF}, "metrics": {"level": LEAF, "readers": LEAF}},
}
ENUMS = {
    "compression": {"gzip", "zstd", "snappy", "deflate", "zlib", "lz4", "none", ""},
    "encoding": {"proto", "json"},
    "routing_key": {"traceID", "service", "resource", "metric", "streamID", "attributes"},
    "sizer": {"requests", "items", "bytes"},
}
DURATION_FIELDS = {"timeout", "check_interval", "initial_interval", "max_interval", "max_elapsed_time", "interval"}

# `rotel-agent start --help` (rotel 0.0.1a15 wheel, agent alpha10): the flags and env vars these configs use.
ROTEL_FLAGS = {
    "--otlp-grpc-endpoint": "ROTEL_OTLP_GRPC_ENDPOINT",
    "--otlp-http-endpoint": "ROTEL_OTLP_HTTP_ENDPOINT",
    "--exporter": "ROTEL_EXPORTER",
    "--otlp-exporter-protocol": "ROTEL_OTLP_EXPORTER_PROTOCOL",
    "--otlp-exporter-endpoint": "ROTEL_OTLP_EXPORTER_ENDPOINT",
    "--otlp-exporter-traces-endpoint": "ROTEL_OTLP_EXPORTER_TRACES_ENDPOINT",
    "--otlp-exporter-custom-headers": "ROTEL_OTLP_EXPORTER_CUSTOM_HEADERS",
    "--otlp-exporter-compression": "ROTEL_OTLP_EXPORTER_COMPRESSION",
    "--otlp-exporter-request-timeout": "ROTEL_OTLP_EXPORTER_REQUEST_TIMEOUT",
    "--otlp-exporter-retry-initial-backoff": "ROTEL_OTLP_EXPORTER_RETRY_INITIAL_BACKOFF",
    "--otlp-exporter-retry-max-backoff": "ROTEL_OTLP_EXPORTER_RETRY_MAX_BACKOFF",
    "--otlp-exporter-retry-max-elapsed-time": "ROTEL_OTLP_EXPORTER_RETRY_MAX_ELAPSED_TIME",
    "--batch-max-size": "ROTEL_BATCH_MAX_SIZE",
    "--batch-timeout": "ROTEL_BATCH_TIMEOUT",
    "--traces-batch-max-size": "ROTEL_TRACES_BATCH_MAX_SIZE",
    "--traces-batch-timeout": "ROTEL_TRACES_BATCH_TIMEOUT",
    "--pid-file": "ROTEL_PID_FILE",
    "--log-file": "ROTEL_LOG_FILE",
    "--log-format": "ROTEL_LOG_FORMAT",
    "--otlp-receiver-metrics-disabled": "ROTEL_OTLP_RECEIVER_METRICS_DISABLED",
    "--otlp-receiver-logs-disabled": "ROTEL_OTLP_RECEIVER_LOGS_DISABLED",
}
ROTEL_ENUMS = {
    "--exporter": {"otlp", "blackhole", "datadog", "clickhouse", "aws-xray", "kafka"},
    "--otlp-exporter-protocol": {"grpc", "http"},
}

BRIDGE_BASE = f"http://127.0.0.1:{DEFAULT_PORT}"


def _load(name: str) -> dict[str, Any]:
    with open(CONFIG_DIR / name, encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    assert isinstance(document, dict)
    return document


def _check_fields(where: str, value: Any, schema: Any) -> None:
    if schema == ANY_MAP:
        assert isinstance(value, dict), where
        assert all(isinstance(v, (str, int, float, bool)) for v in value.values()), where
        return
    if schema == LEAF:
        assert not isinstance(value, dict), f"{where} must be a value, not a section"
        return
    if value is None:
        return
    assert isinstance(value, dict), f"{where} must be a section"
    for key, item in value.items():
        assert key in schema, f"{where}.{key} is not a known field (known: {sorted(schema)})"
        _check_fields(f"{where}.{key}", item, schema[key])
        if key in ENUMS and not isinstance(item, dict):
            assert str(item) in ENUMS[key], f"{where}.{key}: {item!r} is not one of {sorted(ENUMS[key])}"
        if key in DURATION_FIELDS and not isinstance(item, dict):
            assert DURATION.match(str(item)), f"{where}.{key}: {item!r} is not a duration"


COLLECTOR_CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))


def test_the_expected_configs_exist():
    assert {"otelcol-bridge.yaml", "otelcol-loadbalancer.yaml"} <= set(COLLECTOR_CONFIGS)
    assert (CONFIG_DIR / "rotel-to-bridge.env").exists() and (CONFIG_DIR / "rotel-to-bridge.sh").exists()


@pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
def test_collector_config_names_only_known_components_and_fields(name):
    config = _load(name)
    assert set(config) <= {"receivers", "processors", "exporters", "extensions", "connectors", "service"}
    defined: dict[str, set[str]] = {}
    for kind in ("receivers", "processors", "exporters", "extensions"):
        defined[kind] = set()
        for component_id, settings in (config.get(kind) or {}).items():
            component_type = component_id.split("/", 1)[0]
            assert component_type in KNOWN[kind], f"{name}: unknown {kind[:-1]} type {component_type!r}"
            _check_fields(f"{kind}.{component_id}", settings, KNOWN[kind][component_type])
            defined[kind].add(component_id)
    service = config["service"]
    _check_fields("service", service, SERVICE)
    for pipeline_name, pipeline in service["pipelines"].items():
        assert pipeline_name.split("/", 1)[0] == "traces", "these configs carry traces only"
        for kind in ("receivers", "processors", "exporters"):
            for component_id in pipeline.get(kind, []):
                assert component_id in defined[kind], f"{name}: {component_id} is used but not defined"
        assert pipeline["processors"][0] == "memory_limiter", "memory_limiter must come first"
    used = {c for p in service["pipelines"].values() for k in ("receivers", "processors", "exporters") for c in p[k]}
    for kind in ("receivers", "processors", "exporters"):
        assert defined[kind] <= used, f"{name}: defined but unused {kind}: {defined[kind] - used}"
    assert set(service.get("extensions", [])) == defined["extensions"]
    for settings in _walk(config):
        storage = settings.get("storage") if isinstance(settings, dict) else None
        if storage is not None:
            assert storage in defined["extensions"] and storage.startswith("file_storage")


def _walk(node: Any):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_single_collector_pipeline_points_at_the_bridge_defaults():
    config = _load("otelcol-bridge.yaml")
    exporter = config["exporters"]["otlphttp/agentsight"]
    # The otlphttp exporter appends /v1/traces to `endpoint`: the bridge's default host, port and path.
    assert exporter["endpoint"] == BRIDGE_BASE
    assert DEFAULT_PATH == "/v1/traces" and "traces_endpoint" not in exporter
    assert exporter["retry_on_failure"]["enabled"] is True
    queue = exporter["sending_queue"]
    assert queue["enabled"] is True and queue["storage"] == "file_storage/agentsight"
    assert config["service"]["pipelines"]["traces"] == {
        "receivers": ["otlp"],
        "processors": ["memory_limiter", "batch"],
        "exporters": ["otlphttp/agentsight"],
    }
    assert exporter["headers"]["authorization"] == "Bearer ${env:AGENTSIGHT_BRIDGE_TOKEN}"
    receivers = config["receivers"]["otlp"]["protocols"]
    assert receivers["grpc"]["endpoint"].endswith(":4317") and receivers["http"]["endpoint"].endswith(":4318")
    assert int(exporter["endpoint"].rsplit(":", 1)[1]) not in (4317, 4318)


def test_load_balanced_tier_routes_by_trace_id_to_bridge_grpc_ports():
    config = _load("otelcol-loadbalancer.yaml")
    exporter = config["exporters"]["loadbalancing"]
    assert exporter["routing_key"] == "traceID"  # a conversation is a trace
    hostnames = exporter["resolver"]["static"]["hostnames"]
    assert hostnames[0] == f"127.0.0.1:{DEFAULT_GRPC_PORT}"
    assert len(hostnames) == len(set(hostnames)) >= 2
    ports = [int(h.rsplit(":", 1)[1]) for h in hostnames]
    assert not set(ports) & {4317, 4318, DEFAULT_PORT}
    assert "storage" not in exporter["protocol"]["otlp"].get("sending_queue", {})  # contrib issue #16826
    assert exporter["sending_queue"]["storage"] == "file_storage/loadbalancer"
    assert exporter["protocol"]["otlp"]["tls"]["insecure"] is True
    script = (CONFIG_DIR / "run-bridges.sh").read_text()
    assert "--grpc-port" in script and "4320" in script


def _rotel_env() -> dict[str, str]:
    values = {}
    for line in (CONFIG_DIR / "rotel-to-bridge.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = shlex.split(value)[0] if value.strip() else ""
    return values


def _rotel_flags() -> dict[str, str]:
    text = (CONFIG_DIR / "rotel-to-bridge.sh").read_text().replace("\\\n", " ")
    command = next(line for line in text.splitlines() if "start" in line and "exec" in line)
    words = shlex.split(command.split(" start ", 1)[1].replace('"$@"', ""))
    flags = {}
    for word, following in zip(words, [*words[1:], ""]):
        if word.startswith("--"):
            flags[word] = "" if following.startswith("--") else following
    return flags


def test_rotel_env_and_flags_are_real_and_agree():
    env = _rotel_env()
    flags = _rotel_flags()
    known_env = set(ROTEL_FLAGS.values())
    assert set(env) <= known_env, f"unknown rotel variables: {set(env) - known_env}"
    assert set(flags) <= set(ROTEL_FLAGS), f"unknown rotel flags: {set(flags) - set(ROTEL_FLAGS)}"
    for flag, value in flags.items():
        if flag in ROTEL_ENUMS:
            assert value in ROTEL_ENUMS[flag]
        name = ROTEL_FLAGS[flag]
        if name in env and "$" not in value and "$" not in env[name]:
            assert env[name] == value, f"{flag} and {name} disagree"
    for settings in (env, {ROTEL_FLAGS[f]: v for f, v in flags.items()}):
        assert settings["ROTEL_EXPORTER"] == "otlp"
        assert settings["ROTEL_OTLP_EXPORTER_PROTOCOL"] == "http"  # rotel's default is gRPC
        assert settings["ROTEL_OTLP_EXPORTER_ENDPOINT"] == BRIDGE_BASE  # rotel appends /v1/traces
        assert settings["ROTEL_OTLP_EXPORTER_CUSTOM_HEADERS"].startswith("authorization=Bearer ")
        for name in ("ROTEL_OTLP_EXPORTER_REQUEST_TIMEOUT", "ROTEL_OTLP_EXPORTER_RETRY_MAX_ELAPSED_TIME"):
            assert DURATION.match(settings[name])
