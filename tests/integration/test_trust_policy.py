"""Trust policy end to end: a real `agent run` on 127.0.0.1 refuses a rollback and a replay.

The daemon runs as a subprocess with ``run.tlsDisable``; pushes are raw HTTP POSTs of captured
tokens and real ``agent push`` runs (which sign with a random jti and a 5 minute exp). Refusals are
checked on the wire (the plain 404 every refusal gives), in the log, and across restarts.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support import RIGHT_PRIV, client_config, daemon, free_port, listener_config, run_agent

from agent.jws.keys import parse_signing_key
from agent.jws.tokens import decode_token, etcha_claims, sign_token

pytestmark = pytest.mark.integration


def server_config(tmp: Path, port: int, **source: Any) -> Path:
    return listener_config(tmp, port, {"web": {"allowPush": True, **source}})


def signed(tmp: Path, iat: float, name: str) -> str:
    """An Etcha-style pattern token (no jti, no exp) issued at ``iat`` that touches ``name``."""
    target = tmp / name
    files = {"main.jsonnet": f"{{run: [{{id: '{name}', always: true, change: 'touch {target}'}}]}}"}
    claims = etcha_claims(
        pattern_entrypoint="main.jsonnet",
        pattern_files=files,
        build_manifest=name,
        run_vars={},
        version="test",
        now=iat,
    )
    return sign_token(claims, parse_signing_key(RIGHT_PRIV))


def post(port: int, token: str, source: str = "web") -> tuple[int, bytes, str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/etcha/v1/push/{source}", data=token.encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def agent_push(tmp: Path, port: int, pattern: Path) -> subprocess.CompletedProcess[str]:
    client = client_config(tmp)
    host = ["-h", "http://127.0.0.1", "-p", str(port)]
    return run_agent("-c", str(client), "push", *host, "web", str(pattern), cwd=tmp)


def test_real_daemon_refuses_rollback_and_replay_across_restarts(tmp_path: Path) -> None:
    port = free_port()
    config = server_config(tmp_path, port)
    captured = signed(tmp_path, time.time() - 3600, "old")  # an attacker recorded this one
    pattern = tmp_path / "new.jsonnet"
    touch_new = f"touch {tmp_path / 'new'}"
    pattern.write_text(f"{{run: [{{id: 'new', always: true, change: '{touch_new}'}}]}}\n")

    with daemon(tmp_path, config, port, "first", clean_exit=True, stop_timeout=30) as (_, log):
        assert post(port, captured)[0] == 200
        assert (tmp_path / "old").exists()
        (tmp_path / "old").unlink()
        pushed = agent_push(tmp_path, port, pattern)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert (tmp_path / "new").exists()
        push_token = (tmp_path / "state" / "web.jwt").read_text().strip()
        claims = decode_token(push_token).claims
        assert claims["jti"] and claims["exp"] - claims["iat"] == 300  # the client's defaults

        unknown = post(port, captured, source="nope")
        assert unknown[0] == 404
        assert post(port, captured) == unknown  # rollback: byte-identical 404
        assert post(port, push_token) == unknown  # replay of the agent push token
        assert not (tmp_path / "old").exists()
    text = log.read_text()
    assert "Source web: push from 127.0.0.1 refused (reason rollback, key reqYEklgP4)" in text
    assert "Source web: push from 127.0.0.1 refused (reason replay, key reqYEklgP4)" in text

    with daemon(tmp_path, config, port, "restarted", clean_exit=True, stop_timeout=30) as (_, log):
        assert post(port, captured)[0] == 404
        assert post(port, push_token)[0] == 404
        assert not (tmp_path / "old").exists()
    text = log.read_text()
    assert "reason rollback" in text and "reason replay" in text

    lenient = server_config(tmp_path, port, allowRollback=True)
    with daemon(tmp_path, lenient, port, "lenient", clean_exit=True, stop_timeout=30):
        assert post(port, captured)[0] == 200  # allowRollback: rolled back on purpose
        assert (tmp_path / "old").exists()
        assert post(port, push_token)[0] == 404  # replay protection still holds


def test_rollback_mark_survives_a_lost_meta_file(tmp_path: Path) -> None:
    """The token file is written before the meta file: its iat alone keeps the mark."""
    port = free_port()
    config = server_config(tmp_path, port)
    now = time.time()
    old, new = signed(tmp_path, now - 60, "old"), signed(tmp_path, now, "new")
    with daemon(tmp_path, config, port, "first", clean_exit=True, stop_timeout=30):
        assert post(port, new)[0] == 200
    (tmp_path / "state" / "web.meta.json").unlink()
    with daemon(tmp_path, config, port, "second", clean_exit=True, stop_timeout=30) as (_, log):
        assert post(port, old)[0] == 404
    assert "reason rollback" in log.read_text()
    assert not (tmp_path / "old").exists()
