#!/usr/bin/env sh
# Start N agentsight-otel bridges for the load-balanced tier (otelcol-loadbalancer.yaml): bridge i listens for
# OTLP/HTTP on 4319+2(i-1) and OTLP/gRPC on 4320+2(i-1), each with its own spool directory. Needs
# pip install 'agentsight-otel[grpc]' and AGENTSIGHT_API_KEY (and AGENTSIGHT_BRIDGE_TOKEN if the collector sends one).
# Usage: collector-config/run-bridges.sh [N=3] [SPOOL_ROOT=./bridge-spools]; Ctrl-C stops (and drains) them all.
set -eu
count="${1:-3}"
root="${2:-./bridge-spools}"
pids=""
trap 'kill -TERM $pids 2>/dev/null; wait' INT TERM
i=1
while [ "$i" -le "$count" ]; do
  http=$((4319 + 2 * (i - 1)))
  grpc=$((4320 + 2 * (i - 1)))
  mkdir -p "$root/bridge-$i"
  AGENTSIGHT_SPOOL_DIR="$root/bridge-$i" agentsight-otel bridge --port "$http" --grpc-port "$grpc" &
  pids="$pids $!"
  i=$((i + 1))
done
wait
