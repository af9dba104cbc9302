"""Shared fixtures: a real local AgentSight-compatible server over loopback HTTP, and trackers aimed at it."""

from __future__ import annotations

import pytest
import requests

from agentsight_otel import ConversationTracker
from agentsight_otel.localserver import LocalServer


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """Every test gets its own spool directory and no AgentSight settings from the developer's shell.

    The state directory is the test's too: programs a test starts without the ``AGENTSIGHT_*`` variables fall back
    to the default spool folder, which must not be the developer's own.
    """
    for name in list(__import__("os").environ):
        if name.startswith("AGENTSIGHT_") and name != "AGENTSIGHT_DISABLE_ORJSON":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AGENTSIGHT_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture
def server():
    with LocalServer() as srv:
        yield srv


@pytest.fixture
def tracker(server):
    t = ConversationTracker()
    t.configure(api_key=server.api_key, endpoint=server.url)
    yield t
    t.shutdown()


class Api:
    """The read side of the local server over real HTTP, as a user would call it."""

    def __init__(self, server: LocalServer) -> None:
        self.server = server
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Api-Key {server.api_key}"

    def get(self, path: str, **params):
        response = self.session.get(self.server.url + path, params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def transcript(self, conversation_id: str):
        pk = self.get("/api/conversations/lookup/", conversation_id=conversation_id)["id"]
        return self.get(f"/api/conversations/{pk}/transcript/")


@pytest.fixture
def api(server):
    return Api(server)
