"""`agent jwt -s <source>` applies the source's keys and the offline trust policy."""

from __future__ import annotations

import json
import time
from pathlib import Path

from support import run_agent

from agent.jws.keys import generate_keys, parse_signing_key
from agent.jws.tokens import etcha_claims, sign_token

agent = run_agent


def token_file(tmp_path: Path, private: str, *, iat: float) -> Path:
    claims = etcha_claims(
        pattern_entrypoint="/main.jsonnet",
        pattern_files={"/main.jsonnet": "{run: [{id: 'a', always: true}]}"},
        build_manifest="",
        run_vars={},
        version="test",
        now=iat,
    )
    path = tmp_path / "t.jwt"
    path.write_text(sign_token(claims, parse_signing_key(private)))
    return path


def test_allowlist_miss_is_reported_with_its_reason(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "ci")
    token_file(tmp_path, private, iat=time.time())
    (tmp_path / "agent.jsonnet").write_text(
        json.dumps(
            {"run": {"verifyKeys": [public]}, "sources": {"web": {"allowedKeys": ["release"]}}}
        )
    )
    assert agent("jwt", "t.jwt", cwd=tmp_path).returncode == 0  # no source: no allowlist
    res = agent("jwt", "-s", "web", "t.jwt", cwd=tmp_path)
    assert res.returncode == 1
    assert json.loads(res.stdout)["etchaPattern"]["entrypoint"] == "/main.jsonnet"
    assert "(reason key_not_allowed)" in res.stderr


def test_max_token_age_is_reported_as_stale(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "ci")
    token_file(tmp_path, private, iat=time.time() - 7200)
    (tmp_path / "agent.jsonnet").write_text(
        json.dumps({"run": {"verifyKeys": [public]}, "sources": {"web": {"maxTokenAge": "1h"}}})
    )
    res = agent("jwt", "-s", "web", "t.jwt", cwd=tmp_path)
    assert res.returncode == 1 and "(reason stale)" in res.stderr


def test_retired_key_is_reported(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "old")
    token_file(tmp_path, private, iat=time.time())
    (tmp_path / "agent.jsonnet").write_text(
        json.dumps({"run": {"verifyKeys": [{"key": public, "notAfter": "2020-01-01T00:00:00Z"}]}})
    )
    res = agent("jwt", "t.jwt", cwd=tmp_path)
    assert res.returncode == 1 and "(reason key_retired)" in res.stderr


def test_source_verify_keys_are_used_with_s(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "src")
    token_file(tmp_path, private, iat=time.time())
    (tmp_path / "agent.jsonnet").write_text(
        json.dumps({"sources": {"web": {"verifyKeys": [public]}}})
    )
    assert "(reason no_keys)" in agent("jwt", "t.jwt", cwd=tmp_path).stderr
    assert agent("jwt", "-s", "web", "t.jwt", cwd=tmp_path).returncode == 0
