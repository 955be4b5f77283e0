"""A real `agent run` on 127.0.0.1: what a source accepted stays applied, and nothing is lost.

- A pattern pushed by `agent push` (a 5 minute ``exp`` by default; 1 s here) is restored after a
  restart past its ``exp`` and keeps correcting drift on every tick.
- An ad-hoc `agent push core 'command'` runs once and leaves the stored pattern, the state file and
  the scheduled runs as they were.
- 10 rounds of 50 concurrent pushes from several client addresses: after each restart every
  accepted ``jti`` is still refused as a replay.
- Fail fast: an unusable stateDir, `run -o` without sources, `jwt -s` with an unknown source.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support import (
    RIGHT_PRIV,
    RIGHT_PUB,
    client_config,
    daemon,
    free_port,
    listener_config,
    run_agent,
)

from agent.daemon.state import StateStore
from agent.jws.keys import parse_signing_key
from agent.jws.tokens import decode_token, etcha_claims, sign_token

pytestmark = pytest.mark.integration


def write_config(tmp: Path, port: int, **source: Any) -> Path:
    return listener_config(tmp, port, {"core": {"allowPush": True, **source}})


def client_push(tmp: Path, port: int, *words: str) -> subprocess.CompletedProcess[str]:
    client = client_config(tmp, pushTokenExpiresIn="1s")
    host = ["-h", "http://127.0.0.1", "-p", str(port)]
    return run_agent("-c", str(client), "push", *host, "core", *words, cwd=tmp)


def wait_for(predicate: Any, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_pushed_pattern_corrects_drift_after_a_restart_past_its_exp(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port, runFrequency="1s")
    managed = tmp_path / "managed"
    pattern = tmp_path / "managed.jsonnet"
    pattern.write_text(
        f"{{run: [{{id: 'managed', check: 'test -f {managed}', change: 'touch {managed}'}}]}}\n"
    )
    with daemon(tmp_path, config, port, "first", clean_exit=True, stop_timeout=30):
        pushed = client_push(tmp_path, port, str(pattern))
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert managed.exists()
    stored = (tmp_path / "state" / "core.jwt").read_text().strip()
    exp = decode_token(stored).claims["exp"]
    # Past exp and the 30 s leeway: the token could no longer be delivered.
    time.sleep(max(0.0, exp + 31 - time.time()))
    managed.unlink()
    with daemon(tmp_path, config, port, "restarted", clean_exit=True, stop_timeout=30) as (_, log):
        assert wait_for(managed.exists), log.read_text()  # the start-up run
        managed.unlink()
        assert wait_for(managed.exists), log.read_text()  # a tick, well past exp
    text = log.read_text()
    assert "Source core: the stored token expired at " in text
    assert "it stays applied until a newer one is accepted" in text
    assert "Changed 1: managed" in text or text.count("managed") >= 2


def test_adhoc_push_runs_once_and_leaves_the_stored_pattern(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port, runFrequency="1s")
    managed, adhoc = tmp_path / "managed", tmp_path / "adhoc"
    pattern = tmp_path / "managed.jsonnet"
    pattern.write_text(
        f"{{run: [{{id: 'managed', check: 'test -f {managed}', change: 'touch {managed}', "
        f"remove: 'rm {managed}'}}]}}\n"
    )
    with daemon(tmp_path, config, port, "adhoc", clean_exit=True, stop_timeout=30) as (_, log):
        assert client_push(tmp_path, port, str(pattern)).returncode == 0
        state = (tmp_path / "state" / "core.jwt").read_bytes()
        meta = (tmp_path / "state" / "core.meta.json").read_bytes()
        ran = client_push(tmp_path, port, f"echo once >> {adhoc}; echo said-hello")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "said-hello" in ran.stdout  # command mode prints the command's output
        assert managed.exists()  # nothing the source managed was removed
        assert (tmp_path / "state" / "core.jwt").read_bytes() == state
        assert (tmp_path / "state" / "core.meta.json").read_bytes() == meta
        managed.unlink()
        assert wait_for(managed.exists), log.read_text()  # the stored pattern keeps running
        time.sleep(2.5)  # two more ticks
    assert adhoc.read_text().splitlines() == ["once"]


def _post(port: int, token: str, source_ip: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source_ip, 0))
    try:
        conn.request("POST", "/etcha/v1/push/core", body=token.encode())
        return conn.getresponse().status
    finally:
        conn.close()


def test_replay_cache_survives_restarts_after_concurrent_pushes(tmp_path: Path) -> None:
    port = free_port()
    counter = tmp_path / "count"
    config = write_config(tmp_path, port, runMulti=True)
    key = parse_signing_key(RIGHT_PRIV)
    addresses = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
    accepted: list[str] = []
    for round_ in range(10):
        now = time.time()
        tokens = []
        for i in range(50):
            run = f"{{id: 'c', always: true, change: 'echo r >> {counter}'}}"
            files = {"main.jsonnet": f"{{run: [{run}]}}"}
            claims = etcha_claims(
                pattern_entrypoint="main.jsonnet",
                pattern_files=files,
                build_manifest="m",
                run_vars={},
                version="test",
                expires_in=3600,
                jti=f"r{round_}-{i}",
                now=now,
            )
            tokens.append(sign_token(claims, key))
        with (
            daemon(tmp_path, config, port, f"round{round_}", clean_exit=True, stop_timeout=30),
            concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool,
        ):
            statuses = list(
                pool.map(
                    lambda it: _post(port, it[1], addresses[it[0] % len(addresses)]),
                    enumerate(tokens),
                )
            )
        assert statuses == [200] * 50
        accepted.extend(tokens)
        with (
            daemon(tmp_path, config, port, f"replay{round_}", clean_exit=True, stop_timeout=30) as (
                _,
                log,
            ),
            concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool,
        ):
            runs = len(counter.read_text().splitlines())  # after the start-up run
            replayed = list(pool.map(lambda t: _post(port, t, "127.0.0.9"), accepted))
            assert len(counter.read_text().splitlines()) == runs  # no replay ran anything
        assert 200 not in replayed, log.read_text()
        assert "reason replay" in log.read_text()
    saved = StateStore(tmp_path / "state").load_replay()
    assert {jti for jti, _ in saved} >= {f"r{r}-{i}" for r in range(10) for i in range(50)}


def test_run_fails_fast_when_the_state_dir_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = tmp_path / "agent.json"
    config.write_text(
        json.dumps(
            {
                "run": {
                    "listenAddress": f"127.0.0.1:{free_port()}",
                    "stateDir": str(blocker / "state"),
                    "verifyKeys": [RIGHT_PUB],
                    "tlsDisable": True,
                },
                "sources": {"core": {"allowPush": True}},
            }
        )
    )
    for args in (("run",), ("run", "-o")):
        done = run_agent("-c", str(config), *args, cwd=tmp_path, timeout=30)
        assert done.returncode == 1, done.stdout + done.stderr
        assert str(blocker / "state") in done.stderr
        assert "Not a directory" in done.stderr
        assert "Starting listener" not in done.stdout + done.stderr


def test_run_once_without_sources_fails(tmp_path: Path) -> None:
    config = tmp_path / "agent.json"
    config.write_text(json.dumps({"run": {"stateDir": str(tmp_path / "state")}}))
    done = run_agent("-c", str(config), "run", "-o", cwd=tmp_path)
    assert done.returncode == 1
    assert "no sources configured" in done.stderr


def test_jwt_with_an_unknown_source_fails(tmp_path: Path) -> None:
    config = tmp_path / "agent.json"
    config.write_text(
        json.dumps({"run": {"verifyKeys": [RIGHT_PUB]}, "sources": {"web": {"allowPush": True}}})
    )
    claims = etcha_claims(
        pattern_entrypoint="main.jsonnet",
        pattern_files={"main.jsonnet": "{run: []}"},
        build_manifest="m",
        run_vars={},
        version="test",
        now=time.time(),
    )
    token = tmp_path / "t.jwt"
    token.write_text(sign_token(claims, parse_signing_key(RIGHT_PRIV)))
    done = run_agent("-c", str(config), "jwt", "-s", "nope", str(token), cwd=tmp_path)
    assert done.returncode == 1
    assert 'unknown source "nope"' in done.stderr
    ok = run_agent("-c", str(config), "jwt", "-s", "web", str(token), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
