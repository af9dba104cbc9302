#!/usr/bin/env sh
# rotel -> agentsight-otel bridge, as command-line flags (same settings as rotel-to-bridge.env).
# pip install "rotel==0.0.1a15"; the agent binary is rotel/rotel-agent inside the installed package:
#   ROTEL_AGENT="$(python -c 'import rotel, pathlib; print(pathlib.Path(rotel.__file__).parent / "rotel-agent")')"
# Runs in the foreground (no --daemon); stop it with SIGTERM or Ctrl-C. rotel refuses a flag given twice, so
# change a setting here (or use rotel-to-bridge.env); only flags not set below can be added as arguments.
set -eu
ROTEL_AGENT="${ROTEL_AGENT:-rotel-agent}"
exec "$ROTEL_AGENT" start \
  --otlp-grpc-endpoint 127.0.0.1:4317 \
  --otlp-http-endpoint 127.0.0.1:4318 \
  --exporter otlp \
  --otlp-exporter-protocol http \
  --otlp-exporter-endpoint http://127.0.0.1:4319 \
  --otlp-exporter-custom-headers "authorization=Bearer ${AGENTSIGHT_BRIDGE_TOKEN:-}" \
  --otlp-exporter-request-timeout 30s \
  --otlp-exporter-retry-initial-backoff 1s \
  --otlp-exporter-retry-max-backoff 30s \
  --otlp-exporter-retry-max-elapsed-time 600s \
  --batch-max-size 8192 \
  --batch-timeout 200ms \
  --pid-file "${TMPDIR:-/tmp}/rotel-agent.pid" \
  --log-file "${TMPDIR:-/tmp}/rotel-agent.log" \
  "$@"
