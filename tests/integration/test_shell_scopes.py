"""The shell and key scopes: a key whose scope lacks ``shell`` cannot open a session.

Needs the delegation/scopes issue (16): the gate reads ``actions`` from the verifyKeys object
form and refuses :attr:`agent.trust.gate.Action.SHELL` for a key that does not grant it.
"""

from __future__ import annotations

import http.client
import time
from pathlib import Path

from support import RIGHT_PRIV, RIGHT_PUB, daemon, free_port, write_json

from agent.jws.keys import parse_signing_key
from agent.jws.tokens import sign_token


def _open(port: int, source: str) -> tuple[int, bytes]:
    token = sign_token(
        {"c": 80, "r": 24, "exp": int(time.time()) + 5}, parse_signing_key(RIGHT_PRIV)
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", f"/etcha/v1/shell/{source}", body=token.encode())
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_key_without_the_shell_action_is_refused(tmp_path: Path) -> None:
    port = free_port()
    config = write_json(
        tmp_path / "server.json",
        {
            "run": {
                "listenAddress": f"127.0.0.1:{port}",
                "tlsDisable": True,
                "stateDir": str(tmp_path / "state"),
                "rateLimiterRate": "1000-M",
                "verifyKeys": [{"key": RIGHT_PUB, "actions": ["push"]}],
            },
            "sources": {"sh": {"shell": "/bin/sh -i", "allowPush": True}},
        },
    )
    with daemon(tmp_path, config, port) as running:
        assert _open(port, "sh") == (404, b"")
        log = running.log.read_text()
    assert "Shell session started" not in log
