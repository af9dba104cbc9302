"""The command line, as a user runs it: `agentsight-otel demo` and `agentsight-otel serve` in subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import requests

CLI = [sys.executable, "-m", "agentsight_otel.cli"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSIGHT_")}
    env.update(extra)
    return env


def test_demo_without_a_key_ships_to_a_local_server_and_prints_the_stored_transcript(tmp_path):
    state = tmp_path / "state"
    env = _env(XDG_STATE_HOME=str(state))
    out = subprocess.run(CLI + ["demo"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # The local server's port is gone after the demo: no spool for it is left in the user's state directory.
    assert not list(state.rglob("*")), list(state.rglob("*"))
    lines = out.stdout.splitlines()
    assert "errors': 0" in out.stdout
    kinds = [line.split()[1] for line in lines if re.match(r"^  \d\d:\d\d:\d\d\.\d{3}  ", line)]
    assert kinds == ["user", "action", "tokens", "agent", "button", "files", "agent"]
    assert "invoice-1042.pdf" in out.stdout and "gpt-4o-mini: 182 in / 41 out" in out.stdout


def test_demo_with_a_malformed_key_says_so_instead_of_going_local(tmp_path):
    bad = "ags_SECRETPARTxyz"
    out = subprocess.run(
        CLI + ["demo"], capture_output=True, text=True, timeout=60, env=_env(AGENTSIGHT_API_KEY=bad), cwd=tmp_path
    )
    assert out.returncode == 2
    assert "AGENTSIGHT_API_KEY is set but unusable" in out.stdout and "local AgentSight" not in out.stdout
    assert "SECRETPART" not in out.stdout + out.stderr


def test_spool_commands_name_an_unusable_key_without_a_traceback(tmp_path):
    env = _env(AGENTSIGHT_API_KEY="ags_SECRETPARTxyz", AGENTSIGHT_SPOOL_DIR=str(tmp_path))
    for action in (["replay"], ["discard", "--yes"]):
        out = subprocess.run(CLI + ["spool", *action], capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 2, out
        assert "API key does not have the AgentSight shape" in out.stderr and "Traceback" not in out.stderr
        assert "SECRETPART" not in out.stdout + out.stderr


def test_serve_answers_on_loopback_and_prints_how_to_connect(tmp_path):
    db = tmp_path / "local.db"
    proc = subprocess.Popen(
        CLI + ["serve", "--port", "0", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        banner = [proc.stdout.readline() for _ in range(5)]
        url = re.search(r"http://127\.0\.0\.1:\d+", banner[0]).group(0)
        key = re.search(r"AGENTSIGHT_API_KEY=(\S+)", "".join(banner)).group(1)
        me = requests.get(url + "/api/me/", headers={"Authorization": f"Api-Key {key}"}, timeout=10)
        assert me.status_code == 200 and me.json()["role"] == "write"
        assert requests.get(url + "/api/me/", timeout=10).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert db.exists()


def test_spool_command_shows_lists_requeues_and_discards(tmp_path):
    from agentsight_otel.spool import KIND_INGEST, Spool, spool_path

    endpoint = "http://127.0.0.1:9"
    spool = Spool(spool_path(tmp_path, endpoint), endpoint=endpoint)
    spool.put(KIND_INGEST, "waiting-1", b'{"conversation_id": "waiting-1"}', "HTTP 503: down")
    spool.bury(KIND_INGEST, "refused-1", b"{}", 400, "environment: unknown slug")

    def spool_cli(*args):
        return subprocess.run(
            CLI + ["spool", *args, "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60, env=_env()
        )

    status = spool_cli().stdout
    assert "endpoint: http://127.0.0.1:9" in status and "waiting:    1 entry" in status
    assert "last error: HTTP 503: down" in status and "refused:    1 dead letter" in status
    dead = spool_cli("dead").stdout
    assert "refused-1" in dead and "status=400" in dead and "environment: unknown slug" in dead
    assert spool_cli("discard", "--endpoint", endpoint).returncode == 2  # needs --yes
    assert "moved 1 dead letter" in spool_cli("requeue", "--endpoint", endpoint).stdout
    assert "deleted 2" in spool_cli("discard", "--yes", "--endpoint", endpoint).stdout
    assert spool.stats().entries == 0 and spool.stats().dead == 0
