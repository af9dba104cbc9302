"""A local AgentSight-compatible API server (standard library only) for demos, tests and offline work.

It follows the real service's documented rules: `Api-Key` auth (403 on ingest, 401 elsewhere), significant
trailing slashes, whole-batch 400 rejections, idempotent span and attachment storage, and a transcript
projection of the archived spans.
"""

from .app import LocalServer, serve
from .keys import API_KEY_PATTERN, generate_api_key

__all__ = ["API_KEY_PATTERN", "LocalServer", "generate_api_key", "serve"]
