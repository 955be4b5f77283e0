"""`agent shell` and ``POST /etcha/v1/shell/{source}`` against a real daemon on 127.0.0.1.

Wire compatibility is tested with :class:`RawShell`, a client written from the protocol as the
reference describes it (etcha-run.md §7: raw HTTP POSTs whose body is a signed JWT with the
claims c, r, i, s and exp; a newline-delimited answer with the session id line first, then
``o<base64>`` and ``k...`` lines), independent from ``agent.tools.shell``. The agent's own client
is driven on a pty (Python's ``pty`` module) and with piped stdin.
"""

from __future__ import annotations

import base64
import fcntl
import http.client
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import (
    AGENT_MODULE,
    RIGHT_PRIV,
    RIGHT_PUB,
    WRONG_PRIV,
    WRONG_PUB,
    agent_env,
    client_config,
    daemon,
    free_port,
    listener_config,
    run_agent,
)

from agent.jws.keys import generate_keys, parse_signing_key
from agent.jws.tokens import sign_token

SHELL = "/bin/bash --norc --noprofile -i"
SHELL_ENV = {"PS1": "$ ", "HISTFILE": "/dev/null"}
METRICS_KEY = "shell-metrics-key"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def shell_token(
    key: str = RIGHT_PRIV,
    *,
    session: str = "",
    stdin: bytes = b"",
    cols: int = 80,
    rows: int = 24,
    exp: bool = True,
) -> bytes:
    """A request body as Etcha's client builds it."""
    claims: dict[str, Any] = {"c": cols, "r": rows}
    if exp:
        claims["exp"] = int(time.time()) + 5
    if session:
        claims["i"] = session
    if stdin:
        claims["s"] = base64.b64encode(stdin).decode()
    return sign_token(claims, parse_signing_key(key)).encode()


def post(port: int, source: str, body: bytes) -> tuple[int, bytes]:
    """One request; the whole answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", f"/etcha/v1/shell/{source}", body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class RawShell:
    """A session opened by raw HTTP, as the reference describes the protocol."""

    def __init__(self, port: int, source: str, key: str = RIGHT_PRIV) -> None:
        self.port, self.source, self.key = port, source, key
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        self.conn.request(
            "POST",
            f"/etcha/v1/shell/{source}",
            body=shell_token(key),
            headers={
                "Accept": "text/event-stream",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
            },
        )
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.content_type = self.resp.getheader("Content-Type", "")
        self.session = self.resp.readline().decode().strip() if self.status == 200 else ""
        self.output = b""
        self.kinds: set[str] = set()
        self.ended = False

    def send(self, data: bytes, key: str | None = None, cols: int = 80, rows: int = 24) -> int:
        token = shell_token(key or self.key, session=self.session, stdin=data, cols=cols, rows=rows)
        status, body = post(self.port, self.source, token)
        assert body == b""
        return status

    def read_until(self, marker: bytes, timeout: float = 15) -> bytes:
        """Read records until ``marker`` is in the output (or the stream ends)."""
        deadline = time.monotonic() + timeout
        while marker not in self.output and time.monotonic() < deadline:
            line = self.resp.readline()
            if not line:
                self.ended = True
                break
            self.kinds.add(chr(line[0]))
            if line.startswith(b"o"):
                self.output += base64.b64decode(line[1:].strip())
        return self.output

    def read_to_end(self, timeout: float = 15) -> bytes:
        return self.read_until(b"\0never\0", timeout)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="module")
def shell_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    tmp = tmp_path_factory.mktemp("shell")
    port = free_port()
    event_file = tmp / "shell-event.txt"
    sources = {
        "sh": {"shell": SHELL, "exec": {"env": SHELL_ENV}},
        "execsh": {"shell": {"command": SHELL, "env": SHELL_ENV, "workDir": str(tmp)}},
        "asnobody": {
            "shell": {"command": SHELL, "env": SHELL_ENV, "user": "nobody", "workDir": "/"}
        },
        "noshell": {"commands": []},
        "watcher": {
            "eventsReceive": ["shell"],
            "commands": [
                {
                    "id": "record",
                    "always": True,
                    "change": f'echo "$ETCHA_EVENT_ID $ETCHA_EVENT_PUBLIC_KEY" >> {event_file}',
                }
            ],
        },
    }
    config = listener_config(
        tmp,
        port,
        sources,
        shellMaxSessions=2,
        rateLimiterRate="1000-M",
        systemMetricsKey=METRICS_KEY,
        verifyKeys=[RIGHT_PUB, WRONG_PUB],
    )
    with daemon(tmp, config, port) as running:
        yield port, running.log


def metrics(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", f"/etcha/v1/system/metrics?key={METRICS_KEY}")
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def wait_for(predicate: Any, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_wire_session_streams_output_applies_input_and_ends_with_the_shell(
    shell_daemon: tuple[int, Path],
) -> None:
    port, log = shell_daemon
    shell = RawShell(port, "sh")
    try:
        assert shell.status == 200
        assert shell.content_type.startswith("text/event-stream")
        assert UUID.match(shell.session), shell.session
        assert shell.send(b"echo wire-$((6*7))\n") == 200
        assert b"wire-42" in shell.read_until(b"wire-42")
        assert 'etcha_sources_shells{name="sh"' in metrics(port)
        assert re.search(r'etcha_sources_shells\{name="sh"[^}]*\} 1\.0', metrics(port))
        assert shell.send(b"exit\n") == 200
        shell.read_to_end()
        assert shell.ended
        assert shell.kinds <= {"o", "k"}
    finally:
        shell.close()
    assert wait_for(
        lambda: re.search(r'etcha_sources_shells\{name="sh"[^}]*\} 0\.0', metrics(port))
    )
    text = log.read_text()
    assert "Shell session started for source sh using key reqYEklgP4" in text
    assert "Shell session ended for source sh using key reqYEklgP4" in text
    assert shell.session not in text


def test_shell_event_fires_with_the_source_and_key_id(shell_daemon: tuple[int, Path]) -> None:
    port, log = shell_daemon
    shell = RawShell(port, "sh")
    try:
        assert shell.status == 200
        event_file = log.parent / "shell-event.txt"
        assert wait_for(event_file.exists)
        assert "sh reqYEklgP4" in event_file.read_text()
        shell.send(b"exit\n")
        shell.read_to_end()
    finally:
        shell.close()


def test_exec_object_shell_runs_with_its_work_dir_and_env(shell_daemon: tuple[int, Path]) -> None:
    port, log = shell_daemon
    shell = RawShell(port, "execsh")
    try:
        assert shell.status == 200
        shell.send(b"pwd; echo tty-$(tty | cut -c1-8); exit\n")
        out = shell.read_to_end().decode(errors="replace")
    finally:
        shell.close()
    assert str(log.parent) in out
    assert "tty-/dev/pts" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_shell_runs_as_the_exec_user_with_that_users_groups(shell_daemon: tuple[int, Path]) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    port, _ = shell_daemon
    shell = RawShell(port, "asnobody")
    try:
        assert shell.status == 200
        shell.send(b"echo ids:$(id -u):$(id -G):$(pwd); exit\n")
        out = shell.read_to_end().decode(errors="replace")
    finally:
        shell.close()
    groups = " ".join(str(g) for g in os.getgrouplist("nobody", nobody.pw_gid))
    assert f"ids:{nobody.pw_uid}:{groups}:/" in out.replace("\r", "")


@pytest.mark.parametrize("source", ["nosuchsource", "noshell"])
def test_unknown_source_and_source_without_shell_are_404(
    shell_daemon: tuple[int, Path], source: str
) -> None:
    port, _ = shell_daemon
    assert post(port, source, shell_token()) == (404, b"")


def test_untrusted_key_and_token_without_exp_are_404(shell_daemon: tuple[int, Path]) -> None:
    port, _ = shell_daemon
    stranger, _pub = generate_keys("ed25519", "stranger01")
    assert post(port, "sh", shell_token(stranger)) == (404, b"")
    assert post(port, "sh", shell_token(exp=False)) == (404, b"")
    assert post(port, "sh", b"not a jwt") == (404, b"")


def test_follow_up_signed_by_another_key_is_refused(shell_daemon: tuple[int, Path]) -> None:
    port, log = shell_daemon
    shell = RawShell(port, "sh")
    try:
        assert shell.status == 200
        # WRONG_PUB is trusted too, but it did not open this session.
        assert shell.send(b"echo hijacked-$((1+1))\n", key=WRONG_PRIV) == 404
        assert shell.send(b"echo own-$((1+2))\nexit\n") == 200
        out = shell.read_to_end()
    finally:
        shell.close()
    assert b"own-3" in out
    assert b"hijacked-2" not in out
    assert "a follow-up signed by key ZcxoeWfSRt, not by reqYEklgP4" in log.read_text()


def test_stdin_over_64_kib_per_request_is_413(shell_daemon: tuple[int, Path]) -> None:
    port, _ = shell_daemon
    shell = RawShell(port, "sh")
    try:
        assert shell.send(b"x" * (64 * 1024 + 1)) == 413
        assert shell.send(b"exit\n") == 200
        shell.read_to_end()
    finally:
        shell.close()


def test_session_limit_per_source_is_429(shell_daemon: tuple[int, Path]) -> None:
    port, _ = shell_daemon
    assert wait_for(
        lambda: re.search(r'etcha_sources_shells\{name="sh"[^}]*\} 1', metrics(port)) is None
    )
    first, second = RawShell(port, "sh"), RawShell(port, "sh")
    try:
        assert (first.status, second.status) == (200, 200)
        third = RawShell(port, "sh")
        assert third.status == 429
        third.close()
        other = RawShell(port, "execsh")  # the limit is per source
        assert other.status == 200
        other.send(b"exit\n")
        other.read_to_end()
        other.close()
    finally:
        for shell in (first, second):
            shell.send(b"exit\n")
            shell.read_to_end()
            shell.close()


def test_session_ends_when_the_client_goes_away(shell_daemon: tuple[int, Path]) -> None:
    port, log = shell_daemon
    shell = RawShell(port, "execsh")
    assert shell.status == 200
    shell.close()
    assert wait_for(
        lambda: (
            "source execsh using key reqYEklgP4 from 127.0.0.1 (disconnected)" in log.read_text()
        )
    )


def test_idle_session_is_closed(tmp_path: Path) -> None:
    port = free_port()
    config = listener_config(
        tmp_path, port, {"sh": {"shell": SHELL, "exec": {"env": SHELL_ENV}}}, timeoutShell="1s"
    )
    with daemon(tmp_path, config, port) as running:
        shell = RawShell(port, "sh")
        try:
            assert shell.status == 200
            shell.read_to_end(timeout=20)
        finally:
            shell.close()
        assert shell.ended
        assert wait_for(lambda: "(idle)" in running.log.read_text())


# ----------------------------------------------------------------------- the agent's client


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(master: int, marker: bytes, timeout: float = 20) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def _client_on_pty(tmp: Path, port: int) -> tuple[subprocess.Popen[bytes], int, int]:
    master, slave = pty.openpty()
    _set_size(slave, 33, 101)
    client = client_config(tmp)
    argv = [sys.executable, *AGENT_MODULE, "-c", str(client), "shell", "-h", "http://127.0.0.1"]
    proc = subprocess.Popen(
        [*argv, "-p", str(port), "sh"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=agent_env(),
        cwd=tmp,
        start_new_session=True,
    )
    return proc, master, slave


def test_agent_client_on_a_terminal_runs_echo_and_applies_a_resize(
    shell_daemon: tuple[int, Path], tmp_path: Path
) -> None:
    port, _ = shell_daemon
    proc, master, slave = _client_on_pty(tmp_path, port)
    try:
        assert b"$ " in _read_until(master, b"$ ")
        os.write(master, b"echo hi; stty size\r")
        out = _read_until(master, b"33 101")
        assert re.search(rb"\rhi\r\n", out), out
        assert b"33 101" in out
        _set_size(slave, 40, 120)
        os.write(master, b"stty size; exit\r")
        assert b"40 120" in _read_until(master, b"40 120")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def test_terminal_restored_after_the_client_is_killed(
    shell_daemon: tuple[int, Path], tmp_path: Path
) -> None:
    port, _ = shell_daemon
    proc, master, slave = _client_on_pty(tmp_path, port)
    before = termios.tcgetattr(slave)
    try:
        assert b"$ " in _read_until(master, b"$ ")
        raw = termios.tcgetattr(slave)
        assert raw != before  # raw mode while the session runs
        assert not raw[3] & termios.ECHO
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        assert termios.tcgetattr(slave) == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def test_agent_client_with_piped_stdin(shell_daemon: tuple[int, Path], tmp_path: Path) -> None:
    port, _ = shell_daemon
    client = client_config(tmp_path)
    done = run_agent(
        "-c",
        str(client),
        "shell",
        "-h",
        "http://127.0.0.1",
        "-p",
        str(port),
        "sh",
        stdin="echo piped-$((2+3))\n",
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "piped-5" in done.stdout


def test_agent_client_reports_a_refused_session(
    shell_daemon: tuple[int, Path], tmp_path: Path
) -> None:
    port, _ = shell_daemon
    client = client_config(tmp_path)
    done = run_agent(
        "-c",
        str(client),
        "shell",
        "-h",
        "http://127.0.0.1",
        "-p",
        str(port),
        "noshell",
        stdin="",
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "error starting shell: received status 404" in done.stderr


def test_agent_client_uses_a_config_target(shell_daemon: tuple[int, Path], tmp_path: Path) -> None:
    port, _ = shell_daemon
    doc = json.loads(client_config(tmp_path).read_text())
    doc["targets"] = {"box": {"hostname": "127.0.0.1", "port": port, "insecure": True}}
    client = tmp_path / "targets.json"
    client.write_text(json.dumps(doc))
    done = run_agent(
        "-c",
        str(client),
        "shell",
        "sh",
        "box",
        stdin="echo target-$((3+4))\n",
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "target-7" in done.stdout


def _broken_server(sock: socket.socket, release: threading.Event) -> None:
    """Answer one shell request with a session id and one output line, then drop the connection."""
    conn, _ = sock.accept()
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += conn.recv(65536)

        def chunk(payload: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(payload), payload)

        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + chunk(b"7d0c8c2e-0c2f-4c4c-8f5e-5b0f3c2d1a00\n")
            + chunk(b"o" + base64.b64encode(b"hello-broken") + b"\n")
        )
        release.wait(20)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_terminal_restored_when_the_connection_breaks(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        release = threading.Event()
        server = threading.Thread(target=_broken_server, args=(sock, release), daemon=True)
        server.start()
        proc, master, slave = _client_on_pty(tmp_path, sock.getsockname()[1])
        before = termios.tcgetattr(slave)
        try:
            assert b"hello-broken" in _read_until(master, b"hello-broken")
            assert termios.tcgetattr(slave) != before
            release.set()
            assert proc.wait(timeout=20) == 1
            assert termios.tcgetattr(slave) == before
            assert b"connection lost" in _read_until(master, b"connection lost", timeout=5)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
            os.close(slave)


def test_agent_client_over_tls_with_a_pinned_certificate(tmp_path: Path) -> None:
    port = free_port()
    config = listener_config(
        tmp_path, port, {"sh": {"shell": SHELL, "exec": {"env": SHELL_ENV}}}, tls=True
    )
    with daemon(tmp_path, config, port):
        fingerprint = run_agent("-c", str(config), "fingerprint", cwd=tmp_path).stdout.strip()
        client = client_config(tmp_path)
        done = run_agent(
            "-c",
            str(client),
            "shell",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--fingerprint",
            fingerprint,
            "sh",
            stdin="echo tls-$((4+4)); exit\n",
            cwd=tmp_path,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert "tls-8" in done.stdout


def test_shell_sessions_are_recorded_in_the_audit_log(
    shell_daemon: tuple[int, Path], tmp_path: Path
) -> None:
    port, log = shell_daemon
    client = client_config(tmp_path)
    done = run_agent(
        "-c", str(client), "shell", "-h", "http://127.0.0.1", "-p", str(port), "sh",
        stdin="echo audited\n", cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (audit,) = log.parent.rglob("audit.jsonl")

    def phases() -> list[tuple[str, str]]:
        lines = [json.loads(line) for line in audit.read_text().splitlines()]
        return [(e["phase"], e["kid"]) for e in lines if e["event"] == "shell"]

    assert wait_for(lambda: ("end", "reqYEklgP4") in phases())
    assert ("start", "reqYEklgP4") in phases()
    assert "audited" not in audit.read_text()  # session output never reaches the log
    shown = run_agent("audit", "show", "--event", "shell", str(audit.parent), cwd=tmp_path)
    assert "phase start, kid reqYEklgP4" in shown.stdout, shown.stdout + shown.stderr
    assert "phase end, reason exited, kid reqYEklgP4" in shown.stdout
