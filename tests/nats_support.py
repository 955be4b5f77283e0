"""Helpers for the NATS tests and benchmarks: a real ``nats-server`` with JetStream in a temp dir,
and host configs that subscribe to it (issue 20)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support import RIGHT_PRIV, config_doc, free_port, require_tool, write_json

NATS_SERVER = Path("/usr/sbin/nats-server")

#: Changes once (creates ``hello.txt`` in the host's directory), then is a no-op.
PATTERN = '{run: [{id: "hello", check: "test -f hello.txt", change: "echo hi > hello.txt"}]}'


def require_nats_server() -> None:
    """Skip the calling test when Debian's nats-server is not installed (fail in CI)."""
    require_tool(NATS_SERVER, "nats-server")


class NATSServer:
    """A nats-server on 127.0.0.1 with JetStream stored under ``tmp``; restartable."""

    def __init__(self, tmp: Path, *, conf_extra: str = "", scheme: str = "nats") -> None:
        self.tmp = tmp
        self.port = free_port()
        self.scheme = scheme
        self.conf = tmp / "nats.conf"
        self.log = tmp / "nats.log"
        store = tmp / "jetstream"
        self.conf.write_text(
            f'listen: 127.0.0.1:{self.port}\njetstream {{ store_dir: "{store}" }}\n{conf_extra}\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [str(NATS_SERVER), "-c", str(self.conf)], stdout=fh, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nats-server exited: {self.log.read_text()}")
            if "Server is ready" in self.log.read_text():
                return
            time.sleep(0.05)
        raise AssertionError(f"nats-server did not start: {self.log.read_text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


@contextmanager
def nats_server(tmp: Path, **kwargs: Any) -> Iterator[NATSServer]:
    """A started :class:`NATSServer`, killed at the end."""
    require_nats_server()
    server = NATSServer(tmp, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def host_config(
    home: Path,
    url: str,
    hostname: str,
    *,
    source: str = "web",
    nats: Mapping[str, Any] | None = None,
    verify_keys: tuple[str, ...] | None = None,
    run: Mapping[str, Any] | None = None,
    source_extra: Mapping[str, Any] | None = None,
) -> tuple[Path, int]:
    """Write ``home/host.json``: a daemon on a free loopback port (plain HTTP) whose ``source``
    has ``allowNATS`` and whose NATS host name is ``hostname``. Returns (config, port)."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    run_cfg = {"listenAddress": f"127.0.0.1:{port}", "tlsDisable": True, **(run or {})}
    nats_cfg = {"servers": [url], "hostname": hostname, **(nats or {})}
    keys: dict[str, Any] = {} if verify_keys is None else {"verify_keys": verify_keys}
    sources = {source: {"allowNATS": True, **(source_extra or {})}}
    doc = config_doc(home, sources, run=run_cfg, nats=nats_cfg, **keys)
    return write_json(home / "host.json", doc), port


def nats_client_config(tmp: Path, url: str, **nats: Any) -> Path:
    """Write ``tmp/client.json``: signs with RIGHT_PRIV, publishes to ``url``."""
    return write_json(
        tmp / "client.json",
        {"build": {"signingKey": RIGHT_PRIV}, "nats": {"servers": [url], **nats}},
    )


def wait_for_log(log: Path, text: str, timeout: float = 30, count: int = 1) -> None:
    """Wait until ``text`` appears ``count`` times in ``log``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count(text) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {log} after {timeout}s:\n{log.read_text()}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
