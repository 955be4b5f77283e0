"""The revocation-list puller (:class:`agent.daemon.revocations.RevocationPuller`) on real files.

A list is applied (the gate updated, the audit hook told) once per new list: pulling the same
file again is not a new list, and an older list never replaces a newer one.
"""

from __future__ import annotations

import asyncio
import http.server
import logging
import threading
import time
from pathlib import Path

import pytest

from agent.config.schema import Config, config_from_dict
from agent.daemon.revocations import RevocationPuller, kept_revocations
from agent.jws.keys import generate_keys, parse_signing_key
from agent.jws.tokens import TYP_REVOCATIONS, sign_token
from agent.trust.gate import TrustGate
from agent.trust.revocation import RevocationList, Revoked, revocation_claims


def _list(private: str, key: str, iat: float) -> str:
    claims = revocation_claims([Revoked(key, iat)], now=iat)
    return sign_token(claims, parse_signing_key(private), typ=TYP_REVOCATIONS)


def test_an_unchanged_list_is_applied_once_and_an_older_one_never(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "root")
    path = tmp_path / "revocations.jwt"
    now = time.time()
    path.write_text(_list(private, "ci", now - 10))
    config = config_from_dict(
        {"run": {"trustRoots": [public], "revocationPaths": [str(path)], "stateDir": str(tmp_path)}}
    )
    gate = TrustGate(config)
    applied: list[tuple[str, int]] = []

    def seen(where: str, parsed: RevocationList) -> None:
        applied.append((parsed.entries[0].key, parsed.iat))

    puller = RevocationPuller(lambda: config, gate, tmp_path / "state", on_applied=seen)

    async def go() -> None:
        await puller.pull_all()
        await puller.pull_all()  # the same file again: not a new list
        path.write_text(_list(private, "team", now))
        await puller.pull_all()
        path.write_text(_list(private, "old", now - 100))  # older than the one held
        await puller.pull_all()

    asyncio.run(go())
    assert applied == [("ci", int(now - 10)), ("team", int(now))]
    assert [r.key for r in gate.revocations().entries] == ["team"]


# ---------------------------------------------------------------------------- URLs, state, reloads


class _ListServer:
    """A real HTTP server on 127.0.0.1 serving one list with an ETag (304 on a match)."""

    def __init__(self) -> None:
        self.body = ""
        self.etag = '"v1"'
        self.requests: list[tuple[str, int]] = []  # (If-None-Match sent, status answered)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                sent = self.headers.get("If-None-Match", "")
                status = 304 if sent == outer.etag else 200
                outer.requests.append((sent, status))
                self.send_response(status)
                self.send_header("ETag", outer.etag)
                data = b"" if status == 304 else outer.body.encode()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/revocations.jwt"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _ListServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _config(public: str, paths: list[str], state: Path) -> Config:
    return config_from_dict(
        {"run": {"trustRoots": [public], "revocationPaths": paths, "stateDir": str(state)}}
    )


def test_a_url_is_pulled_with_its_etag_and_a_304_keeps_the_list_held(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "root")
    now = time.time()
    with _ListServer() as server:
        server.body = _list(private, "ci", now - 5)
        config = _config(public, [server.url], tmp_path)
        gate = TrustGate(config)
        puller = RevocationPuller(lambda: config, gate, tmp_path)

        async def go() -> None:
            await puller.pull_all()
            await puller.pull_all()  # same ETag: 304, nothing fetched again

        asyncio.run(go())
    assert server.requests == [("", 200), ('"v1"', 304)]
    assert puller.held[server.url].etag == '"v1"'
    assert [r.key for r in gate.revocations().entries] == ["ci"]


def test_lists_kept_in_state_dir_are_reloaded_at_start_with_their_etag(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "root")
    with _ListServer() as server:
        server.body = _list(private, "ci", time.time() - 5)
        config = _config(public, [server.url], tmp_path)
        first = RevocationPuller(lambda: config, TrustGate(config), tmp_path)
        asyncio.run(first.pull_all())
        kept = sorted(p.name for p in tmp_path.glob("agent-revocations-*"))
        assert len(kept) == 2 and kept[0].endswith(".jwt") and kept[1].endswith(".meta.json")

        gate = TrustGate(config)  # a restart: a new puller, a new gate
        second = RevocationPuller(lambda: config, gate, tmp_path)
        asyncio.run(second.due())  # first call: loads the kept list, then pulls (a 304)
        assert second._task is not None
        second._task.cancel()
    assert server.requests[-1] == ('"v1"', 304)
    assert [r.key for r in gate.revocations().entries] == ["ci"]


def test_a_tampered_kept_list_is_dropped_at_start(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "root")
    source = tmp_path / "list.jwt"
    source.write_text(_list(private, "ci", time.time() - 5))
    config = _config(public, [str(source)], tmp_path / "state")
    asyncio.run(RevocationPuller(lambda: config, TrustGate(config), tmp_path / "state").pull_all())
    (kept,) = (tmp_path / "state").glob("agent-revocations-*.jwt")
    header, claims, signature = kept.read_text().strip().split(".")
    kept.write_text(f"{header}.{claims}.{signature[:-4]}AAAA\n")

    gate = TrustGate(config)
    puller = RevocationPuller(lambda: config, gate, tmp_path / "state")
    puller.load_held(config)
    assert puller.held == {}
    assert gate.revocations().entries == ()


def test_removing_revocation_paths_by_a_reload_clears_the_pulled_set(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "root")
    source = tmp_path / "list.jwt"
    source.write_text(_list(private, "ci", time.time() - 5))
    configs = [_config(public, [str(source)], tmp_path)]
    gate = TrustGate(configs[0])
    puller = RevocationPuller(lambda: configs[-1], gate, tmp_path)

    async def go() -> None:
        await puller.due()
        assert [r.key for r in gate.revocations().entries] == ["ci"]
        await puller.due()  # within revocationFrequency: nothing pulled again
        configs.append(config_from_dict({"run": {"trustRoots": [public]}}))
        await puller.due()
        assert puller._task is not None
        puller._task.cancel()

    asyncio.run(go())
    assert puller.held == {}
    assert gate.revocations().entries == ()


def test_a_path_dropped_from_the_list_of_paths_is_no_longer_held(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "root")
    first, second = tmp_path / "a.jwt", tmp_path / "b.jwt"
    first.write_text(_list(private, "ci", time.time() - 5))
    second.write_text(_list(private, "team", time.time() - 5))
    configs = [_config(public, [str(first), str(second)], tmp_path)]
    gate = TrustGate(configs[0])
    puller = RevocationPuller(lambda: configs[-1], gate, tmp_path)
    asyncio.run(puller.pull_all())
    assert sorted(r.key for r in gate.revocations().entries) == ["ci", "team"]
    configs.append(_config(public, [str(second)], tmp_path))
    asyncio.run(puller.pull_all())
    assert list(puller.held) == [str(second)]
    assert [r.key for r in gate.revocations().entries] == ["team"]


def test_a_list_that_fails_verification_is_refused_with_its_reason_and_the_held_one_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private, public = generate_keys("ed25519", "root")
    stranger, _ = generate_keys("ed25519", "stranger")
    source = tmp_path / "list.jwt"
    source.write_text(_list(private, "ci", time.time() - 5))
    config = _config(public, [str(source)], tmp_path)
    gate = TrustGate(config)
    puller = RevocationPuller(lambda: config, gate, tmp_path)
    asyncio.run(puller.pull_all())
    source.write_text(_list(stranger, "everyone", time.time()))
    with caplog.at_level(logging.ERROR, logger="agent.daemon.revocations"):
        asyncio.run(puller.pull_all())
    assert "refused (reason no_match)" in caplog.text
    assert [r.key for r in gate.revocations().entries] == ["ci"]


def test_a_path_that_cannot_be_pulled_is_logged_and_the_held_list_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private, public = generate_keys("ed25519", "root")
    source = tmp_path / "list.jwt"
    source.write_text(_list(private, "ci", time.time() - 5))
    config = _config(public, [str(source)], tmp_path)
    gate = TrustGate(config)
    puller = RevocationPuller(lambda: config, gate, tmp_path)
    asyncio.run(puller.pull_all())
    source.unlink()
    with caplog.at_level(logging.ERROR, logger="agent.daemon.revocations"):
        asyncio.run(puller.pull_all())
    assert "not pulled" in caplog.text
    assert [r.key for r in gate.revocations().entries] == ["ci"]


def test_a_list_that_cannot_be_kept_is_still_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private, public = generate_keys("ed25519", "root")
    source = tmp_path / "list.jwt"
    source.write_text(_list(private, "ci", time.time() - 5))
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state directory should be")
    config = _config(public, [str(source)], blocked)
    gate = TrustGate(config)
    with caplog.at_level(logging.ERROR, logger="agent.daemon.revocations"):
        asyncio.run(RevocationPuller(lambda: config, gate, blocked).pull_all())
    assert "not kept in" in caplog.text
    assert [r.key for r in gate.revocations().entries] == ["ci"]


def test_kept_revocations_gives_the_cli_gate_the_lists_in_state_dir(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "root")
    source = tmp_path / "list.jwt"
    source.write_text(_list(private, "ci", time.time() - 5))
    config = _config(public, [str(source)], tmp_path)
    asyncio.run(RevocationPuller(lambda: config, TrustGate(config), tmp_path).pull_all())
    source.unlink()  # the CLI pulls nothing: only the kept copy counts
    gate = TrustGate(config)
    kept_revocations(config, gate)
    assert [r.key for r in gate.revocations().entries] == ["ci"]
    bare = TrustGate(config_from_dict({"run": {"trustRoots": [public]}}))
    kept_revocations(bare.config, bare)
    assert bare.revocations().entries == ()


def test_the_periodic_pull_applies_a_new_list_after_revocation_frequency(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "root")
    source = tmp_path / "list.jwt"
    now = time.time()
    source.write_text(_list(private, "ci", now - 5))
    config = config_from_dict(
        {
            "run": {
                "trustRoots": [public],
                "revocationPaths": [str(source)],
                "revocationFrequency": "1s",
                "stateDir": str(tmp_path),
            }
        }
    )
    gate = TrustGate(config)
    applied = asyncio.Event()
    puller = RevocationPuller(
        lambda: config, gate, tmp_path, on_applied=lambda path, parsed: applied.set()
    )

    async def go() -> None:
        await puller.due()
        applied.clear()
        source.write_text(_list(private, "team", now))
        await asyncio.wait_for(applied.wait(), timeout=10)
        for _ in range(200):  # the gate is updated once the list is kept
            if [r.key for r in gate.revocations().entries] == ["team"]:
                break
            await asyncio.sleep(0.01)
        assert puller._task is not None
        puller._task.cancel()

    asyncio.run(go())
    assert [r.key for r in gate.revocations().entries] == ["team"]
