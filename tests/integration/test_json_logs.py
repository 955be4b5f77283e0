"""A real daemon logging JSON: the run summary and a refusal carry their fields (issue 15, 4)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from support import RIGHT_PRIV, daemon, free_port, listener_config

from agent.jws.keys import parse_signing_key
from agent.jws.tokens import etcha_claims, sign_token


def _token(path: Path, iat: float) -> str:
    files = {
        "main.jsonnet": f"{{run: [{{id: 'a', check: 'test -f {path}', change: 'touch {path}'}}]}}"
    }
    claims = etcha_claims(
        pattern_entrypoint="main.jsonnet",
        pattern_files=files,
        build_manifest=str(iat),
        run_vars={},
        version="test",
        now=iat,
    )
    return sign_token(claims, parse_signing_key(RIGHT_PRIV))


def _post(port: int, token: str) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/etcha/v1/push/web", data=token.encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _records(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_json_logs_carry_source_trigger_duration_and_error(tmp_path: Path) -> None:
    port = free_port()
    config = listener_config(tmp_path, port, {"web": {"allowPush": True}})
    doc = json.loads(config.read_text())
    doc["cli"] = {"logFormat": "json"}
    config.write_text(json.dumps(doc))
    now = time.time()
    with daemon(tmp_path, config, port, clean_exit=True) as running:
        assert _post(port, _token(tmp_path / "a", now)) == 200
        assert _post(port, _token(tmp_path / "b", now - 3600)) == 404  # rollback
        log = running.log
    records = _records(log)
    assert records, log.read_text()
    assert all({"time", "level", "msg"} <= set(r) for r in records)
    summary = [r for r in records if r["msg"].startswith("Source web: ") and "check" in r["msg"]]
    assert summary and summary[-1]["source"] == "web" and summary[-1]["trigger"] == "push"
    assert isinstance(summary[-1]["duration_ms"], int | float)
    refusal = [r for r in records if "refused" in r["msg"]]
    assert refusal and refusal[0]["source"] == "web" and refusal[0]["error"] == "rollback"
    assert refusal[0]["level"] == "error" and refusal[0]["trigger"] == "push"
