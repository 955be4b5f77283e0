"""Fleet transport over NATS (issue 20) against a real nats-server with JetStream and real
``agent run`` daemons: one publish, one reply per host, catch-up, reconnection, refusals."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from nats_support import (
    PATTERN,
    NATSServer,
    host_config,
    nats_client_config,
    nats_server,
    wait_for_log,
)
from support import WRONG_PUB, daemon, run_agent

pytestmark = pytest.mark.integration

FLEET = 20
#: Would create other.txt: only ever pushed in check mode.
OTHER = '{run: [{id: "other", check: "test -f other.txt", change: "touch other.txt"}]}'
#: Creates only.txt: pushed to one host subject.
ONLY = '{run: [{id: "only", check: "test -f only.txt", change: "touch only.txt"}]}'
SECOND = '{run: [{id: "second", check: "test -f second.txt", change: "touch second.txt"}]}'


class Fleet(NamedTuple):
    tmp: Path
    server: NATSServer
    client: Path
    homes: dict[str, Path]


def push(fleet_tmp: Path, client: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_agent("-c", str(client), "push", "--nats", *args, cwd=fleet_tmp)


def write_patterns(tmp: Path) -> None:
    for name, text in (("hello", PATTERN), ("other", OTHER), ("only", ONLY), ("second", SECOND)):
        (tmp / f"{name}.jsonnet").write_text(text)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """20 real daemons, hosts h00..h19, subscribed to one nats-server (started in parallel)."""
    tmp = tmp_path_factory.mktemp("fleet")
    with nats_server(tmp) as server, ExitStack() as stack:
        homes: dict[str, Path] = {}
        logs = []
        for i in range(FLEET):
            name = f"h{i:02d}"
            homes[name] = tmp / name
            cfg, _ = host_config(tmp / name, server.url, name)
            logs.append(stack.enter_context(daemon(tmp / name, cfg, None, name="agent")).log)
        for log in logs:
            wait_for_log(log, "NATS: connected", timeout=90)
        write_patterns(tmp)
        yield Fleet(tmp, server, nats_client_config(tmp, server.url), homes)


def blocks(stdout: str) -> dict[str, list[str]]:
    """Host blocks of the human output (the recap line excluded), by host name."""
    out: dict[str, list[str]] = {}
    current: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("    "):
            current.append(line.strip())
        elif line.endswith(":"):
            current = out.setdefault(line.removesuffix(":"), [])
    return out


# ------------------------------------------------------------------------------- the fleet


def test_one_publish_reaches_twenty_hosts_then_a_republish_is_a_no_op(fleet: Fleet) -> None:
    first = push(fleet.tmp, fleet.client, "--expect", str(FLEET), "web", "hello.jsonnet")
    assert first.returncode == 0, first.stderr
    assert sorted(blocks(first.stdout)) == sorted(fleet.homes)
    assert all(b == ["Changed 1: hello"] for b in blocks(first.stdout).values()), first.stdout
    assert first.stdout.splitlines()[-1] == (
        f"{FLEET} targets: {FLEET} changed, 0 unchanged, 0 failed, 0 unreachable"
    )
    assert "Stored as message" in first.stderr
    assert all((home / "hello.txt").read_text() == "hi\n" for home in fleet.homes.values())

    again = push(fleet.tmp, fleet.client, "--expect", str(FLEET), "web", "hello.jsonnet")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == (
        f"{FLEET} targets: 0 changed, {FLEET} unchanged, 0 failed, 0 unreachable"
    )
    print(first.stdout, first.stderr, again.stdout)  # the closing note shows this output


def test_check_mode_reports_drift_and_changes_nothing(fleet: Fleet) -> None:
    r = push(fleet.tmp, fleet.client, "-c", "--expect", str(FLEET), "web", "other.jsonnet")
    assert r.returncode == 0, r.stderr
    assert all(b == ["Would change 1: other"] for b in blocks(r.stdout).values()), r.stdout
    assert len(blocks(r.stdout)) == FLEET
    assert "Stored" not in r.stderr  # check mode never goes to the stream
    assert not any((home / "other.txt").exists() for home in fleet.homes.values())


def test_host_subject_reaches_only_that_host(fleet: Fleet) -> None:
    args = ("--host", "h07", "--expect", "2", "--timeout", "4s", "web", "only.jsonnet")
    r = push(fleet.tmp, fleet.client, *args)
    assert r.returncode == 0, r.stderr
    assert blocks(r.stdout) == {"h07": ["Changed 1: only"]}
    assert r.stdout.splitlines()[-1].startswith("1 target: 1 changed")
    assert sorted(n for n, home in fleet.homes.items() if (home / "only.txt").exists()) == ["h07"]


def test_status_over_nats_answers_for_every_host(fleet: Fleet) -> None:
    r = run_agent(
        "-c", str(fleet.client), "status", "--nats", "-f", "json", "--timeout", "10s",
        cwd=fleet.tmp,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert sorted(doc) == sorted(fleet.homes)
    assert all("web" in entry["status"]["sources"] for entry in doc.values())


def test_no_reply_exits_1(fleet: Fleet) -> None:
    r = push(fleet.tmp, fleet.client, "--timeout", "1s", "nobody", "hello.jsonnet")
    assert r.returncode == 1
    assert "no host replied on etcha.push.nobody" in r.stderr


# ------------------------------------------------------------------------------- refusals


def test_host_with_the_wrong_key_answers_refused(tmp_path: Path) -> None:
    with nats_server(tmp_path) as server:
        cfg, _ = host_config(tmp_path / "w1", server.url, "w1", verify_keys=(WRONG_PUB,))
        with daemon(tmp_path / "w1", cfg, None, name="agent") as d:
            wait_for_log(d.log, "NATS: connected")
            (tmp_path / "hello.jsonnet").write_text(PATTERN)
            client = nats_client_config(tmp_path, server.url)
            r = run_agent("-c", str(client), "push", "--nats", "web", "hello.jsonnet", cwd=tmp_path)
            raw = asyncio.run(_request(server.url, "etcha.direct.web.w1", b"not-a-token"))
        assert r.returncode == 1, r.stdout
        assert r.stdout.splitlines()[0] == "w1:"
        assert "ERROR: refused" in r.stdout
        assert r.stdout.splitlines()[-1].startswith("1 target: 0 changed, 0 unchanged, 1 failed")
        assert json.loads(raw) == {"hostname": "w1", "status": "refused"}
        assert not (tmp_path / "w1" / "hello.txt").exists()


async def _request(url: str, subject: str, body: bytes, **options: Any) -> bytes:
    import nats

    nc = await nats.connect(servers=[url], **options)
    try:
        msg = await nc.request(subject, body, timeout=10)
        return bytes(msg.data)
    finally:
        await nc.close()


def test_older_token_on_the_stream_is_refused_by_the_rollback_mark(tmp_path: Path) -> None:
    write_patterns(tmp_path)
    with nats_server(tmp_path) as server:
        client = nats_client_config(tmp_path, server.url)
        cfg, _ = host_config(tmp_path / "r1", server.url, "r1")
        with daemon(tmp_path / "r1", cfg, None, name="first") as d:
            wait_for_log(d.log, "NATS: connected")
            assert run_agent("-c", str(client), "push", "--nats", "web", "hello.jsonnet",
                             cwd=tmp_path).returncode == 0  # fmt: skip
            time.sleep(1.1)  # iat has whole seconds: the second token is newer
            r = run_agent("-c", str(client), "push", "--nats", "--host", "r1", "web",
                          "second.jsonnet", cwd=tmp_path)  # fmt: skip
            assert r.returncode == 0, r.stdout + r.stderr
        # Restarted: the stream holds the older token on etcha.push.web (message 1) and the one
        # the host holds on etcha.push.web.r1 (message 2).
        with daemon(tmp_path / "r1", cfg, None, name="second") as d:
            wait_for_log(d.log, "stream message 2 already applied; skipped")
            log = d.log.read_text()
        assert "catch-up for web: stream message 1 on etcha.push.web: refused" in log
        assert "rollback" in log


# ------------------------------------------------------------------------------- catch-up


def _metrics(port: int) -> str:
    url = f"http://127.0.0.1:{port}/etcha/v1/system/metrics?key=mkey"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def test_host_down_during_a_publish_catches_up_through_jetstream(tmp_path: Path) -> None:
    write_patterns(tmp_path)
    with nats_server(tmp_path) as server:
        client = nats_client_config(tmp_path, server.url)
        online, _ = host_config(tmp_path / "up", server.url, "up")
        late, port = host_config(tmp_path / "late", server.url, "late",
                                 run={"systemMetricsKey": "mkey"})  # fmt: skip
        with daemon(tmp_path / "up", online, None, name="agent") as d:
            wait_for_log(d.log, "NATS: connected")
            r = run_agent("-c", str(client), "push", "--nats", "web", "hello.jsonnet", cwd=tmp_path)
            assert r.returncode == 0, r.stdout + r.stderr
        assert not (tmp_path / "late" / "hello.txt").exists()
        with daemon(tmp_path / "late", late, port, name="agent") as d:
            wait_for_log(d.log, "catch-up for web: stream message 1 on etcha.push.web: ok")
            metrics = _metrics(port)
            print(d.log.read_text())  # the closing note shows a host catching up
        assert (tmp_path / "late" / "hello.txt").read_text() == "hi\n"
        assert "etcha_nats_connected 1.0" in metrics
        assert 'etcha_nats_messages_total{source="web",status="ok"} 1.0' in metrics


def test_hosts_reconnect_after_the_server_restarts_and_apply_the_next_publish(
    tmp_path: Path,
) -> None:
    write_patterns(tmp_path)
    with nats_server(tmp_path) as server:
        client = nats_client_config(tmp_path, server.url)
        cfg, port = host_config(tmp_path / "h", server.url, "h", run={"systemMetricsKey": "mkey"})
        with daemon(tmp_path / "h", cfg, port, name="agent") as d:
            wait_for_log(d.log, "NATS: connected")
            server.kill()
            wait_for_log(d.log, "NATS: connection lost; reconnecting")
            wait_for_log(d.log, "NATS: cannot connect to")  # the backoff, logged
            assert "etcha_nats_connected 0.0" in _metrics(port)
            server.start()
            wait_for_log(d.log, "NATS: connected", count=2)
            r = run_agent("-c", str(client), "push", "--nats", "web", "hello.jsonnet", cwd=tmp_path)
            assert r.returncode == 0, r.stdout + r.stderr
            assert blocks(r.stdout) == {"h": ["Changed 1: hello"]}
        assert re.search(r"cannot connect to .* \(attempt 1\).*retrying in \d", d.log.read_text())


# ------------------------------------------------------------------------------- auth, TLS


def _nkey_seed(tmp: Path) -> tuple[Path, str]:
    import os

    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path = tmp / "host.nk"
    path.write_bytes(seed)
    return path, str(nkeys.from_seed(bytearray(seed)).public_key.decode())


def test_nkey_host_and_password_client_authenticate(tmp_path: Path) -> None:
    write_patterns(tmp_path)
    seed, public = _nkey_seed(tmp_path)
    users = f'authorization {{ users = [ {{nkey: "{public}"}}, {{user: ops, password: "pw1"}} ] }}'
    with nats_server(tmp_path, conf_extra=users) as server:
        cfg, _ = host_config(tmp_path / "k", server.url, "k", nats={"nkeySeedFile": str(seed)})
        with daemon(tmp_path / "k", cfg, None, name="agent") as d:
            wait_for_log(d.log, "NATS: connected")
            good = nats_client_config(tmp_path, server.url, user="ops", password="pw1")
            r = run_agent("-c", str(good), "push", "--nats", "web", "hello.jsonnet", cwd=tmp_path)
            assert r.returncode == 0, r.stdout + r.stderr
            assert blocks(r.stdout) == {"k": ["Changed 1: hello"]}
            bad = nats_client_config(tmp_path, server.url, user="ops", password="wrong")
            r = run_agent("-c", str(bad), "push", "--nats", "web", "hello.jsonnet", cwd=tmp_path)
        assert r.returncode == 1
        assert "nats: expected to connect to" in r.stderr
        assert "pw1" not in r.stderr and "wrong" not in r.stderr


def _tls_files(tmp: Path) -> tuple[Path, Path, Path]:
    ca_key, ca, key, csr, cert = (tmp / n for n in ("ca.key", "ca.pem", "s.key", "s.csr", "s.pem"))
    ext = tmp / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for cmd in (
        f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "
        f"-subj /CN=test-ca -keyout {ca_key} -out {ca}",
        f"openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 "
        f"-keyout {key} -out {csr}",
        f"openssl x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial -days 2 "
        f"-extfile {ext} -out {cert}",
    ):
        subprocess.run(cmd.split(), check=True, capture_output=True, timeout=60)
    return ca, cert, key


def test_tls_to_the_server(tmp_path: Path) -> None:
    write_patterns(tmp_path)
    ca, cert, key = _tls_files(tmp_path)
    tls = f'tls {{ cert_file: "{cert}", key_file: "{key}" }}'
    with nats_server(tmp_path, conf_extra=tls, scheme="tls") as server:
        cfg, _ = host_config(tmp_path / "t", server.url, "t", nats={"tls": {"caFile": str(ca)}})
        with daemon(tmp_path / "t", cfg, None, name="agent") as d:
            wait_for_log(d.log, "NATS: connected")
            client = nats_client_config(tmp_path, server.url, tls={"caFile": str(ca)})
            r = run_agent("-c", str(client), "push", "--nats", "web", "hello.jsonnet", cwd=tmp_path)
            assert r.returncode == 0, r.stdout + r.stderr
            assert blocks(r.stdout) == {"t": ["Changed 1: hello"]}
            untrusted = nats_client_config(tmp_path, server.url)
            r = run_agent("-c", str(untrusted), "push", "--nats", "web", "hello.jsonnet",
                          cwd=tmp_path)  # fmt: skip
        assert r.returncode == 1
        assert "CERTIFICATE_VERIFY_FAILED" in r.stderr or "certificate" in r.stderr.lower()


# ------------------------------------------------------------------------------- imports


def test_a_host_without_a_nats_section_never_imports_the_client(tmp_path: Path) -> None:
    imports = {"PYTHONPROFILEIMPORTTIME": "1"}
    with nats_server(tmp_path) as server:
        cfg, _ = host_config(tmp_path / "with", server.url, "with")
        plain = json.loads(cfg.read_text())
        del plain["nats"]
        plain["sources"] = {"web": {"allowPush": True}}
        plain["run"]["stateDir"] = str(tmp_path / "without" / "state")
        plain["run"]["listenAddress"] = plain["run"]["listenAddress"].rsplit(":", 1)[0] + ":0"
        (tmp_path / "without").mkdir()
        without = tmp_path / "without" / "host.json"
        without.write_text(json.dumps(plain))
        with daemon(tmp_path / "with", cfg, None, name="agent", env=imports) as d:
            wait_for_log(d.log, "NATS: connected")
            loaded = d.log.read_text()
        with daemon(tmp_path / "without", without, None, name="agent", env=imports) as d:
            wait_for_log(d.log, "Starting listener")
            unloaded = d.log.read_text()
    nats_import = re.compile(r"^import time:.*\|\s+nats(\.\w+)*\s*$", re.MULTILINE)
    assert nats_import.search(loaded)  # the control: the import log does show nats-py
    assert "h11" in unloaded  # the log is an import log of a real daemon (its listener)
    assert not nats_import.search(unloaded)
