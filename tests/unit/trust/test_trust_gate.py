"""The trust gate: its table is the docs table, its capability type, and `render -s` refusing
exactly what `jwt -s` refuses without running the token's Jsonnet."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from support import REPO, run_agent

from agent.config.schema import config_from_dict
from agent.core.errors import VerifyError
from agent.jws.keys import generate_keys, parse_signing_key
from agent.jws.tokens import etcha_claims, sign_token
from agent.pattern.load import load_from_token
from agent.trust.gate import (
    _AFTER_VERIFY,
    CHECKS,
    VERIFY_STEP,
    Action,
    AdmittedToken,
    Context,
    TrustGate,
    checks_for,
    docs_table,
)

DOCS = REPO / "docs" / "security.md"


def test_docs_security_table_is_the_gate_table() -> None:
    text = DOCS.read_text()
    start = text.index("<!-- trust-gate-table:start -->\n") + len(
        "<!-- trust-gate-table:start -->\n"
    )
    end = text.index("<!-- trust-gate-table:end -->")
    assert text[start:end] == docs_table()


def test_every_table_entry_has_exactly_one_implementation() -> None:
    after = [name for name, _ in _AFTER_VERIFY]
    assert sorted([*VERIFY_STEP, *after]) == sorted(CHECKS)
    assert after[-1] == "replay"  # only a token every other check accepted consumes its jti


def test_stored_tokens_skip_delivery_checks_and_push_gets_all() -> None:
    assert "times" not in checks_for(Context.RESTORE) and "stale" not in checks_for(Context.RUN)
    assert "rollback" in checks_for(Context.RESTORE) and "rollback" not in checks_for(Context.RUN)
    assert checks_for(Context.PUSH) == tuple(CHECKS)
    assert "replay" not in checks_for(Context.PULL)


def test_admitted_token_is_built_only_by_the_gate() -> None:
    private, public = generate_keys("ed25519", "k")
    raw = sign_token({"iat": int(time.time())}, parse_signing_key(private))
    gate = TrustGate(config_from_dict({"run": {"verifyKeys": [public]}}))
    admitted = asyncio.run(gate.admit(raw, "", Context.OFFLINE))
    with pytest.raises(TypeError, match=r"TrustGate\.admit"):
        AdmittedToken(admitted.verified, "", Context.PUSH)
    with pytest.raises(TypeError, match="AdmittedToken"):
        load_from_token(admitted.verified, config=gate.config, source="")  # type: ignore[arg-type]


def test_gate_counts_each_refusal_once_with_its_reason() -> None:
    private, public = generate_keys("ed25519", "k")
    raw = sign_token({"iat": int(time.time()) - 7200}, parse_signing_key(private))
    cfg = config_from_dict(
        {"run": {"verifyKeys": [public]}, "sources": {"web": {"maxTokenAge": "1h"}}}
    )
    seen: list[tuple[str, str]] = []

    class Counter:
        def verify_failure(self, source: str, reason: str) -> None:
            seen.append((source, reason))

    gate = TrustGate(cfg, metrics=Counter())
    with pytest.raises(VerifyError) as info:
        asyncio.run(gate.admit(raw, "web", Context.PULL))
    assert info.value.reason == "stale"
    asyncio.run(gate.admit(raw, "web", Context.RUN))  # stored tokens stay applied
    assert seen == [("web", "stale")]


def test_gate_tells_its_observer_of_each_admission_and_refusal_with_the_action() -> None:
    private, public = generate_keys("ed25519", "k")
    now = int(time.time())
    fresh = sign_token({"iat": now}, parse_signing_key(private))
    old = sign_token({"iat": now - 7200}, parse_signing_key(private))
    cfg = config_from_dict(
        {"run": {"verifyKeys": [public]}, "sources": {"web": {"maxTokenAge": "1h"}}}
    )
    events: list[tuple[str, ...]] = []

    class Observer:
        def admitted(self, token: AdmittedToken, origin: str) -> None:
            action = token.action.value if token.action else "-"
            events.append(("admit", token.source, token.context.value, action, origin))

        def refused(
            self, source: str, context: Context, reason: str, key_id: str, origin: str
        ) -> None:
            events.append(("refuse", source, context.value, reason, key_id, origin))

    gate = TrustGate(cfg, observer=Observer())
    asyncio.run(gate.admit(fresh, "web", Context.PUSH, origin="from 127.0.0.1"))
    asyncio.run(gate.admit(fresh, "web", Context.PUSH, action=Action.CHECK))
    asyncio.run(gate.admit(fresh, "web", Context.PULL))
    admitted = asyncio.run(gate.admit(fresh, "web", Context.RUN))
    with pytest.raises(VerifyError):
        asyncio.run(gate.admit(old, "web", Context.PULL, origin="from mirror"))
    assert admitted.chain_key_ids == ()
    assert events == [
        ("admit", "web", "push", "push", "from 127.0.0.1"),
        ("admit", "web", "push", "check", ""),
        ("admit", "web", "pull", "pull", ""),
        ("admit", "web", "run", "-", ""),
        ("refuse", "web", "pull", "stale", "k", "from mirror"),
    ]


def test_render_s_refuses_a_stale_token_like_jwt_s_and_runs_no_natives(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "ci")
    marker = tmp_path / "rendered"
    # getFile reads the marker only when the pattern renders; the file exists so a render would
    # succeed and print its content. A refusal prints nothing on stdout.
    marker.write_text("RENDERED-CONTENT")
    pattern = "{run: [{id: std.native('getFile')('" + str(marker) + "', ''), always: true}]}"
    claims = etcha_claims(
        pattern_entrypoint="/main.jsonnet",
        pattern_files={"/main.jsonnet": pattern},
        build_manifest="",
        run_vars={},
        version="test",
        now=time.time() - 7200,
    )
    (tmp_path / "stale.jwt").write_text(sign_token(claims, parse_signing_key(private)))
    (tmp_path / "agent.jsonnet").write_text(
        json.dumps({"run": {"verifyKeys": [public]}, "sources": {"web": {"maxTokenAge": "1h"}}})
    )
    jwt = run_agent("jwt", "-s", "web", "stale.jwt", cwd=tmp_path)
    render = run_agent("render", "-s", "web", "stale.jwt", cwd=tmp_path)
    assert jwt.returncode == render.returncode == 1
    assert "(reason stale)" in jwt.stderr and "(reason stale)" in render.stderr
    assert "RENDERED-CONTENT" not in render.stdout + render.stderr
    compare = run_agent("compare", "-s", "web", "stale.jwt", "stale.jwt", cwd=tmp_path)
    assert compare.returncode == 1 and "(reason stale)" in compare.stderr
    # Without the source policy the same token renders (and its native runs).
    ok = run_agent("render", "stale.jwt", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "RENDERED-CONTENT" in ok.stdout
