"""The audit log of a real daemon: every event type, receipts, no secrets, 200 concurrent pushes,
kill -9 and repair (issue 18)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from support import (
    RIGHT_PRIV,
    WRONG_PRIV,
    client_config,
    daemon,
    free_port,
    listener_config,
    run_agent,
    wait_for,
    write_json,
)

from agent.jws.audit import audit_files
from agent.jws.keys import parse_signing_key
from agent.jws.tokens import etcha_claims, sign_token

SECRET_VAR = "s3cr3t-var-value-7781"
SECRET_OUTPUT = "s3cr3t-output-9912"


def token(name: str, *, key: str = RIGHT_PRIV, change: str = "true", now: float = 0) -> str:
    files = {"main.jsonnet": f"{{run: [{{id: '{name}', always: true, change: '{change}'}}]}}"}
    claims = etcha_claims(
        pattern_entrypoint="main.jsonnet",
        pattern_files=files,
        build_manifest=name,
        run_vars={"dbPassword": SECRET_VAR},
        version="test",
        now=now or time.time(),
    )
    return sign_token(claims, parse_signing_key(key))


def post(port: int, body: str, source: str = "web") -> tuple[int, bytes]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/etcha/v1/push/{source}", data=body.encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post_quietly(port: int, body: str) -> None:
    """A push whose connection the test may cut (kill -9)."""
    with contextlib.suppress(OSError):
        post(port, body)


def entries(state: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in audit_files(state / "audit"):
        out.extend(json.loads(line) for line in path.read_text().splitlines())
    return out


def verify(tmp: Path, config: Path, *extra: str) -> Any:
    return run_agent("-c", str(config), "audit", "verify", *extra, cwd=tmp)


def test_a_daemon_records_every_event_type_and_confirms_receipts(tmp_path: Path) -> None:
    port = free_port()
    pulled = tmp_path / "pulled.jwt"
    pulled.write_text(token("pulled"))
    sources = {
        "web": {"allowPush": True, "vars": {"dbPassword": SECRET_VAR}},
        "pulled": {"pullPaths": [str(pulled)]},
    }
    config = listener_config(tmp_path, port, sources)
    pattern = tmp_path / "p.jsonnet"
    pattern.write_text(f"{{run: [{{id: 'web', always: true, change: 'echo {SECRET_OUTPUT}'}}]}}\n")
    wrong = token("wrong", key=WRONG_PRIV)
    with daemon(tmp_path, config, port, clean_exit=True) as running:
        push = run_agent(
            "-c", str(client_config(tmp_path)), "push", "-v", "-h", "http://127.0.0.1",
            "-p", str(port), "web", str(pattern), cwd=tmp_path,
        )  # fmt: skip
        assert push.returncode == 0, push.stdout + push.stderr
        receipt = next(
            line.split(": ", 1)[1] for line in push.stdout.splitlines() if "Audit receipt:" in line
        )
        assert post(port, wrong)[0] == 404
        doc = json.loads(config.read_text())
        doc["sources"]["web"]["noRemove"] = True
        write_json(config, doc)
        running.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP: config sections changed" in running.log.read_text(), "reload")
    log = entries(tmp_path / "state")
    events = [e["event"] for e in log]
    assert events[0] == "start" and events[-2:] == ["stop", "checkpoint"]
    assert {"admit", "refuse", "run", "reload"} <= set(events)
    admits = {e["context"]: e for e in log if e["event"] == "admit"}
    assert admits["push"]["remoteAddr"] == "127.0.0.1" and admits["push"]["kid"] == "reqYEklgP4"
    assert admits["pull"]["source"] == "pulled" and len(admits["pull"]["patternSha256"]) == 64
    refusal = next(e for e in log if e["event"] == "refuse")
    assert (refusal["source"], refusal["context"], refusal["reason"]) == ("web", "push", "no_match")
    run = next(e for e in log if e["event"] == "run" and e.get("trigger") == "push")
    assert run["result"]["changed"] == ["web"] and f"{run['seq']}:{run['hash']}" == receipt
    reload_ = next(e for e in log if e["event"] == "reload")
    assert reload_["changed"] == ["sources"]
    text = "".join(p.read_text() for p in (tmp_path / "state" / "audit").iterdir())
    for secret in (SECRET_VAR, SECRET_OUTPUT, wrong, pulled.read_text().strip()):
        assert secret not in text
    checked = verify(tmp_path, config, "--receipt", receipt)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        "signatures verified" in checked.stdout and f"Receipt {receipt} confirmed" in checked.stdout
    )
    beyond = verify(tmp_path, config, "--receipt", f"{len(log) + 50}:{'0' * 64}")
    assert beyond.returncode == 1 and "beyond the log's end" in beyond.stdout


def test_200_concurrent_pushes_give_strictly_increasing_intact_lines(tmp_path: Path) -> None:
    port = free_port()
    config = listener_config(
        tmp_path,
        port,
        {"web": {"allowPush": True}},
        maxConnections=512,
        maxConnectionsPerAddress=256,
        auditMaxBytes=65536,
        auditKeep=100,
        auditCheckpointEvery=25,
    )
    now = time.time()
    tokens = [token(f"t{i}", now=now) for i in range(200)]
    statuses: list[int] = []
    lock = threading.Lock()

    def push(body: str) -> None:
        status, _ = post(port, body)
        with lock:
            statuses.append(status)

    with daemon(tmp_path, config, port, clean_exit=True):
        threads = [threading.Thread(target=push, args=(t,)) for t in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=100)
    assert statuses.count(200) == 200
    chained = [e for e in entries(tmp_path / "state") if e["event"] != "checkpoint"]
    seqs = [e["seq"] for e in chained]
    assert seqs == list(range(1, len(seqs) + 1))
    assert sum(1 for e in chained if e["event"] == "run") == 200
    assert len(list((tmp_path / "state" / "audit").glob("audit-*.jsonl"))) >= 1  # it rotated
    checked = verify(tmp_path, config)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_kill_9_during_writes_then_restart_repairs_the_log(tmp_path: Path) -> None:
    port = free_port()
    config = listener_config(tmp_path, port, {"web": {"allowPush": True}})
    now = time.time()
    with daemon(tmp_path, config, port) as running:
        pushers = [
            threading.Thread(target=post_quietly, args=(port, token(f"k{i}", now=now)))
            for i in range(30)
        ]
        for t in pushers:
            t.start()
        current = tmp_path / "state" / "audit" / "audit.jsonl"
        wait_for(lambda: current.exists() and current.stat().st_size > 2000, "audit lines")
        os.kill(running.proc.pid, signal.SIGKILL)  # while pushes are being recorded
        running.proc.wait()
        for t in pushers:
            t.join(timeout=30)
    with current.open("ab") as fh:  # and the torn write a crash inside write() would leave
        fh.write(b'{"seq":999999,"time":"2026-11-30T')
    with daemon(tmp_path, config, port, name="restart", clean_exit=True) as running:
        pass
    log = entries(tmp_path / "state")
    repair = next(e for e in log if e["event"] == "repair")
    assert repair["droppedBytes"] >= len('{"seq":999999,"time":"2026-11-30T')
    assert "truncated a partial last line" in running.log.read_text()
    checked = verify(tmp_path, config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
