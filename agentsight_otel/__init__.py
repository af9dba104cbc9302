"""agentsight-otel."""
