"""A local AgentSight-compatible API server (standard library only) for demos, tests and offline work.

It follows the real service's documented rules: `Api-Key` auth (403 on ingest, 401 elsewhere), significant
trailing slashes, whole-batch 400 rejections, idempotent span and attachment storage, and a transcript
projection of the archived spans. It can also misbehave on purpose (`Faults`): injected error statuses,
Retry-After, latency, connection resets, a body-size limit and temporary outages.
"""

from .app import LocalServer, serve
from .faults import Faults
from .keys import API_KEY_PATTERN, generate_api_key

__all__ = ["API_KEY_PATTERN", "Faults", "LocalServer", "generate_api_key", "serve"]
