"""Issue 14, contract 5: an idle daemon imports the heavy parts only when its config needs them.

A real ``agent run`` process (a ``python -c`` wrapper around :func:`agent.cli.main` that writes
the top-level names in ``sys.modules`` to a file when the daemon exits after SIGTERM) runs with a
given config; the test reads that file. Heavy parts and what brings each in:

- ``prometheus_client``: only with ``run.systemMetricsKey``;
- ``_gojsonnet`` (the Go Jsonnet engine): never, renders happen in short-lived children
  (:mod:`agent.daemon.render_child`), also after a push;
- ``cryptography``: only for non-Ed25519 keys (every key here is Ed25519);
- ``apscheduler``: only when a source has a ``runFrequency``;
- ``aiohttp``: never, whatever the config (the listener is :mod:`agent.net.httpserver` on h11,
  pulls use the stdlib client).

Lighter parts an idle daemon does not need either (issue 14, the idle memory target): the NATS
side, the shell sessions (pty), ``nacl.signing`` (verification calls libsodium directly),
``importlib.metadata`` (APScheduler is imported without it) and ``difflib``.
"""

from __future__ import annotations

import contextlib
import http.server
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from support import agent_env, client_config, free_port, listener_config, run_agent, wait_port

WRAPPER = (
    "import sys, atexit\n"
    "def _dump(path=sys.argv[1]):\n"
    "    with open(path, 'w') as fh:\n"
    "        fh.write('\\n'.join(sorted(sys.modules)))\n"
    "atexit.register(_dump)\n"
    "from agent.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


class _Recording(http.server.SimpleHTTPRequestHandler):
    requested: list[str]

    def log_message(self, format: str, *args: object) -> None:
        self.requested.append(self.path)


@contextlib.contextmanager
def http_file_server(directory: Path, requested: list[str]) -> Iterator[str]:
    """A stdlib HTTP server of ``directory`` on 127.0.0.1 (a pull source's URL); the paths asked
    for are appended to ``requested``."""
    recording = type("Recording", (_Recording,), {"requested": requested})
    handler = partial(recording, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _daemon_modules(
    tmp: Path, config: Path, port: int, *, push: bool, hook: bool = False
) -> set[str]:
    """Start the daemon, optionally push one ad-hoc command to ``core`` and call ``/hook``, stop
    it; its modules."""
    dump, log = tmp / "modules.txt", tmp / "daemon.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER, str(dump), "-c", str(config), "run"],
            cwd=tmp,
            env=agent_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port(port, proc, log)
        if push:
            client = client_config(tmp)
            url = f"http://127.0.0.1:{port}"
            res = run_agent("-c", str(client), "push", "-h", url, "core", "true", cwd=tmp)
            assert res.returncode == 0, res.stdout + res.stderr
        if hook:
            for path in (
                "/hook",
                "/etcha/v1/system/metrics?key=k",
                "/etcha/v1/system/status?key=k",
            ):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
                    assert r.status == 200, path
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()
    return set(dump.read_text().split())


def test_daemon_without_metrics_key_or_renders_imports_no_heavy_part(tmp_path: Path) -> None:
    port = free_port()
    sources = {
        "static": {"commands": [{"id": "s", "check": "true", "change": "true"}]},
        "core": {"allowPush": True},
    }
    modules = _daemon_modules(tmp_path, listener_config(tmp_path, port, sources), port, push=False)
    assert "h11" in modules  # the dump is real: the listener is there
    assert not modules & {
        "aiohttp",
        "prometheus_client",
        "_gojsonnet",
        "cryptography",
        "apscheduler",
    }


def test_metrics_key_a_push_and_a_run_frequency_bring_in_only_what_they_need(
    tmp_path: Path,
) -> None:
    port = free_port()
    pull = tmp_path / "pull.jsonnet"
    pull.write_text("{run: [{id: 'p', check: 'true', change: 'true'}]}\n")
    sources = {
        "core": {"allowPush": True},
        "pulled": {"pullPaths": [str(pull)], "runFrequency": "5m"},
    }
    config = listener_config(tmp_path, port, sources, systemMetricsKey="secret-metrics-key")
    modules = _daemon_modules(tmp_path, config, port, push=True)
    assert {"prometheus_client", "apscheduler"} <= modules
    assert not modules & {"_gojsonnet", "cryptography", "aiohttp"}


def test_idle_daemon_of_the_memory_bench_loads_no_unused_part(tmp_path: Path) -> None:
    """bench/floors.py's idle daemon: static commands, a push source and a pull source with a
    runFrequency, after one push."""
    port = free_port()
    pull = tmp_path / "pull.jsonnet"
    pull.write_text("{run: [{id: 'p', check: 'true', change: 'true'}]}\n")
    sources = {
        "static": {"commands": [{"id": "s", "check": "true", "change": "true"}]},
        "core": {"allowPush": True},
        "pulled": {"pullPaths": [str(pull)], "runFrequency": "5m"},
    }
    modules = _daemon_modules(tmp_path, listener_config(tmp_path, port, sources), port, push=True)
    assert {"apscheduler", "nacl._sodium", "agent.daemon.app"} <= modules  # the dump is real
    assert not modules & {
        "agent.daemon.nats_host",
        "agent.daemon.shell",
        "pty",
        "nacl.signing",
        "importlib.metadata",
        "email",
        "difflib",
        "agent.tools.report",
    }


def test_daemon_never_imports_aiohttp_after_a_push_a_url_pull_and_a_webhook(
    tmp_path: Path,
) -> None:
    """Every HTTP path of the daemon at once: TLS listener, push, a pull from an http URL and
    from a file, a webhook, the metrics and status routes, events and a shell source."""
    port = free_port()
    pull = tmp_path / "pull.jsonnet"
    pull.write_text("{run: [{id: 'p', check: 'true', change: 'true'}]}\n")
    served = tmp_path / "served"
    served.mkdir()
    (served / "url.jsonnet").write_text("{run: [{id: 'u', check: 'true', change: 'true'}]}\n")
    requested: list[str] = []
    with http_file_server(served, requested) as base:
        sources = {
            "core": {"allowPush": True, "shell": "/bin/sh"},
            "pulled": {"pullPaths": [str(pull)]},
            "fetched": {"pullPaths": [f"{base}/url.jsonnet"]},
            "hook": {
                "webhookPaths": ["/hook"],
                "commands": [
                    {
                        "id": "h",
                        "always": True,
                        "change": "echo hi",
                        "onChange": ["etcha:webhookBody"],
                    }
                ],
            },
        }
        config = listener_config(tmp_path, port, sources, systemMetricsKey="k")
        modules = _daemon_modules(tmp_path, config, port, push=True, hook=True)
    assert "h11" in modules
    assert not modules & {"aiohttp", "_gojsonnet"}
    assert "/url.jsonnet" in requested  # the URL pull really happened
