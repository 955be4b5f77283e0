"""Delegated, scoped and revocable trust end to end: real `agent run` daemons on 127.0.0.1.

Keys come from `agent generate-keys`, delegations from `agent delegate`, revocation lists from
`agent revoke`; tokens are built and pushed by `agent build`/`agent push` with
``build.delegationChain``. The host pins only the root key (``run.trustRoots``).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support import daemon, free_port, listener_config, run_agent, write_json

from agent.jws.keys import parse_signing_key
from agent.jws.tokens import TYP_REVOCATIONS, decode_token, sign_token
from agent.trust.revocation import Revoked, revocation_claims

pytestmark = pytest.mark.integration


def keys(tmp: Path, name: str) -> tuple[Path, str]:
    """``tmp/NAME.key`` (private) and the public key string."""
    proc = run_agent(
        "generate-keys",
        name,
        "--private-file",
        str(tmp / f"{name}.key"),
        "--public-file",
        str(tmp / f"{name}.pub"),
    )
    assert proc.returncode == 0, proc.stderr
    return tmp / f"{name}.key", (tmp / f"{name}.pub").read_text().strip()


def delegate(tmp: Path, signer: Path, subject: str, out: str, *flags: str) -> Path:
    proc = run_agent(
        "delegate", "--subject", subject, "--key", str(signer), *flags, "-o", out, cwd=tmp
    )
    assert proc.returncode == 0, proc.stderr
    return tmp / out


def pattern(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.jsonnet"
    marker = tmp / f"{name}.ran"
    path.write_text(f"{{run: [{{id: '{name}', always: true, change: 'echo x >> {marker}'}}]}}\n")
    return path


def push(tmp: Path, client: Path, port: int, source: str, path: Path, *flags: str) -> Any:
    host = ["-h", "http://127.0.0.1", "-p", str(port)]
    return run_agent("-c", str(client), "push", *flags, *host, source, str(path), cwd=tmp)


def wait_for(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_real_daemon_admits_delegated_ci_key_for_push_and_pull_and_refuses_widening(
    tmp_path: Path,
) -> None:
    root_key, root_pub = keys(tmp_path, "root")
    team_key, team_pub = keys(tmp_path, "team")
    ci_key, ci_pub = keys(tmp_path, "ci")
    scope = ("--sources", "web,pulled")
    delegate(
        tmp_path,
        root_key,
        team_pub,
        "team.jwt",
        *scope,
        "--expires",
        "1d",
        "--actions",
        "push,pull",
        "--delegate",
    )
    delegate(
        tmp_path, team_key, ci_pub, "ci.jwt", *scope, "--expires", "12h", "--actions", "push,pull"
    )
    delegate(
        tmp_path,
        team_key,
        ci_pub,
        "wide.jwt",
        "--sources",
        "web,db",
        "--expires",
        "12h",
        "--actions",
        "push",
    )
    chain = [str(tmp_path / "team.jwt"), str(tmp_path / "ci.jwt")]
    client = write_json(
        tmp_path / "client.json",
        {"build": {"signingKeyPath": str(ci_key), "delegationChain": chain}},
    )
    wide = write_json(
        tmp_path / "wide.json",
        {
            "build": {
                "signingKeyPath": str(ci_key),
                "delegationChain": [chain[0], str(tmp_path / "wide.jwt")],
            }
        },
    )
    built = run_agent(
        "-c", str(client), "build", str(pattern(tmp_path, "pulled")), "pulled.jwt", cwd=tmp_path
    )
    assert built.returncode == 0, built.stderr
    verdict = run_agent(
        "-c",
        str(client),
        "jwt",
        "-s",
        "web",
        "--action",
        "push",
        str(tmp_path / "pulled.jwt"),
        cwd=tmp_path,
    )
    assert "Verdict: source web for push: admitted" not in verdict.stdout  # no trust roots here

    port = free_port()
    sources = {
        "web": {"allowPush": True},
        "db": {"allowPush": True},
        "pulled": {"pullPaths": [str(tmp_path / "pulled.jwt")]},
    }
    config = listener_config(tmp_path, port, sources, trustRoots=[root_pub])
    with daemon(tmp_path, config, port, clean_exit=True, stop_timeout=30) as (_, log):
        assert wait_for(lambda: (tmp_path / "pulled.ran").exists())  # pulled at start-up
        ok = push(tmp_path, client, port, "web", pattern(tmp_path, "web"))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert (tmp_path / "web.ran").exists()
        other = push(tmp_path, client, port, "db", pattern(tmp_path, "db"))
        widened = push(tmp_path, wide, port, "web", pattern(tmp_path, "wide"))
        assert other.returncode != 0 and widened.returncode != 0
        assert not (tmp_path / "db.ran").exists() and not (tmp_path / "wide.ran").exists()
    text = log.read_text()
    assert "Source db: push from 127.0.0.1 refused (reason scope_source, key ci)" in text
    assert "refused (reason chain_widens" in text
    shown = run_agent(
        "-c",
        str(config),
        "jwt",
        "-s",
        "web",
        "--action",
        "pull",
        str(tmp_path / "pulled.jwt"),
        cwd=tmp_path,
    )
    assert "[0] subject team, sources web,pulled, actions push,pull,delegate" in shown.stdout
    assert "[1] subject ci, sources web,pulled, actions push,pull" in shown.stdout
    assert "Verdict: source web for pull: admitted" in shown.stdout


def test_check_only_ci_key_can_push_check_mode_and_never_change(tmp_path: Path) -> None:
    ci_key, ci_pub = keys(tmp_path, "ci")
    port = free_port()
    config = write_json(
        tmp_path / "server.json",
        {
            "run": {
                "listenAddress": f"127.0.0.1:{port}",
                "tlsDisable": True,
                "stateDir": str(tmp_path / "state"),
                "verifyKeys": [{"key": ci_pub, "actions": ["check"]}],
            },
            "sources": {"web": {"allowPush": True}},
        },
    )
    client = write_json(tmp_path / "client.json", {"build": {"signingKeyPath": str(ci_key)}})
    path = tmp_path / "p.jsonnet"
    path.write_text(
        f"{{run: [{{id: 'a', check: 'true', change: 'touch {tmp_path / 'changed'}'}}]}}\n"
    )
    with daemon(tmp_path, config, port, clean_exit=True, stop_timeout=30) as (_, log):
        checked = push(tmp_path, client, port, "web", path, "-c")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        changed = push(tmp_path, client, port, "web", path)
        assert changed.returncode != 0
    assert not (tmp_path / "changed").exists()
    assert "refused (reason scope_action, key ci)" in log.read_text()


class _Lists(http.server.BaseHTTPRequestHandler):
    """Serves ``/list.jwt`` from ``server.body`` with an ETag; counts 200s and 304s."""

    def do_GET(self) -> None:
        server: Any = self.server
        etag = f'"{hash(server.body) & 0xFFFFFFFF:x}"'
        if self.headers.get("If-None-Match") == etag:
            server.counts[304] += 1
            self.send_response(304)
            self.end_headers()
            return
        server.counts[200] += 1
        data = server.body.encode()
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        del args


@contextmanager
def list_server(body: str) -> Iterator[Any]:
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Lists)
    server.body, server.counts = body, {200: 0, 304: 0}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_pulled_revocation_list_stops_a_stored_pattern_and_older_lists_are_ignored(
    tmp_path: Path,
) -> None:
    root_key, root_pub = keys(tmp_path, "root")
    ci_key, ci_pub = keys(tmp_path, "ci")
    delegate(
        tmp_path,
        root_key,
        ci_pub,
        "ci.jwt",
        "--sources",
        "web",
        "--actions",
        "push",
        "--expires",
        "1d",
    )
    client = write_json(
        tmp_path / "client.json",
        {"build": {"signingKeyPath": str(ci_key), "delegationChain": [str(tmp_path / "ci.jwt")]}},
    )
    root = parse_signing_key(root_key.read_text().strip())
    old = time.time() - 600
    first = sign_token(
        revocation_claims([Revoked("nobody", old)], now=old), root, typ=TYP_REVOCATIONS
    )
    port = free_port()
    with list_server(first) as lists:
        url = f"http://127.0.0.1:{lists.server_address[1]}/list.jwt"
        sources = {"web": {"allowPush": True, "runFrequency": "1s"}}
        config = listener_config(
            tmp_path,
            port,
            sources,
            trustRoots=[root_pub],
            revocationPaths=[url],
            revocationFrequency="1s",
        )
        with daemon(tmp_path, config, port, clean_exit=True, stop_timeout=30) as (_, log):
            pushed = push(tmp_path, client, port, "web", pattern(tmp_path, "web"))
            assert pushed.returncode == 0, pushed.stdout + pushed.stderr
            marker = tmp_path / "web.ran"
            assert wait_for(lambda: len(marker.read_text().splitlines()) >= 2)  # runs each tick
            assert wait_for(lambda: lists.counts[304] >= 1)  # conditional requests
            revoke = run_agent(
                "revoke",
                "--key",
                "ci",
                "--before",
                "now",
                "--signing-key",
                str(root_key),
                "-o",
                "list.jwt",
                cwd=tmp_path,
            )
            assert revoke.returncode == 0, revoke.stderr
            lists.body = (tmp_path / "list.jwt").read_text()
            assert wait_for(lambda: "no longer accepted (revoked)" in log.read_text())
            runs = len(marker.read_text().splitlines())
            time.sleep(2.5)
            assert len(marker.read_text().splitlines()) == runs  # stopped, not removed
            lists.body = first  # an older list is ignored
            assert wait_for(lambda: "older than the one held" in log.read_text())
            refused = push(tmp_path, client, port, "web", pattern(tmp_path, "again"))
            assert refused.returncode != 0
    kept = list((tmp_path / "state").glob("agent-revocations-*.jwt"))
    assert (
        len(kept) == 1
        and kept[0].read_text().strip() == (tmp_path / "list.jwt").read_text().strip()
    )
    audit = (tmp_path / "state" / "audit" / "audit.jsonl").read_text().splitlines()
    applied = [json.loads(line) for line in audit if '"event":"revocations"' in line]
    assert [entry["revoked"] for entry in applied][-1] == ["ci"]  # the audit log saw each list


def test_delegate_refuses_a_link_wider_than_its_parent_and_clamps_exp(tmp_path: Path) -> None:
    root_key, _ = keys(tmp_path, "root")
    team_key, team_pub = keys(tmp_path, "team")
    _, ci_pub = keys(tmp_path, "ci")
    parent = delegate(
        tmp_path,
        root_key,
        team_pub,
        "team.jwt",
        "--sources",
        "web",
        "--actions",
        "push",
        "--delegate",
        "--expires",
        "1h",
    )
    config = write_json(
        tmp_path / "team.json",
        {"build": {"signingKeyPath": str(team_key), "delegationChain": [str(parent)]}},
    )
    base = ("-c", str(config), "delegate", "--subject", ci_pub, "--actions", "push")
    wide = run_agent(*base, "--sources", "web,db", "--expires", "1h", cwd=tmp_path)
    assert wide.returncode == 2 and "grants sources ['web']" in wide.stderr
    long = run_agent(*base, "--sources", "web", "--expires", "90d", cwd=tmp_path)
    assert long.returncode == 0, long.stderr
    child = decode_token(long.stdout.strip()).claims
    assert child["exp"] == decode_token(parent.read_text().strip()).claims["exp"]
    assert child["etchaDelegation"] == {"actions": ["push"], "sources": ["web"]}


def test_revoke_merges_an_existing_list_keeping_the_latest_time(tmp_path: Path) -> None:
    root_key, _ = keys(tmp_path, "root")
    signing = ("--signing-key", str(root_key))
    first = run_agent(
        "revoke",
        "--key",
        "a",
        "--before",
        "2030-01-01T00:00:00Z",
        *signing,
        "-o",
        "list.jwt",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    merged = run_agent(
        "revoke", "--key", "b", "--before", "now", "--merge", "list.jwt", *signing, cwd=tmp_path
    )
    again = run_agent(
        "revoke",
        "--key",
        "a",
        "--before",
        "2029-01-01T00:00:00Z",
        "--merge",
        "list.jwt",
        *signing,
        cwd=tmp_path,
    )
    token = decode_token(merged.stdout.strip())
    assert token.header["typ"] == "etcha-revocations+jwt"
    assert [e["key"] for e in token.claims["etchaRevocations"]] == ["a", "b"]
    kept = decode_token(again.stdout.strip()).claims["etchaRevocations"]
    assert kept == [{"key": "a", "before": "2030-01-01T00:00:00Z"}]
