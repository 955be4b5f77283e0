"""Issue 14, contract 5: an idle daemon imports the heavy parts only when its config needs them.

A real ``agent run`` process (a ``python -c`` wrapper around :func:`agent.cli.main` that writes
the top-level names in ``sys.modules`` to a file when the daemon exits after SIGTERM) runs with a
given config; the test reads that file. Heavy parts and what brings each in:

- ``prometheus_client``: only with ``run.systemMetricsKey``;
- ``_gojsonnet`` (the Go Jsonnet engine): never, renders happen in short-lived children
  (:mod:`agent.daemon.render_child`), also after a push;
- ``cryptography``: only for non-Ed25519 keys (every key here is Ed25519);
- ``apscheduler``: only when a source has a ``runFrequency``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from support import agent_env, client_config, free_port, listener_config, run_agent, wait_port

WRAPPER = (
    "import sys, atexit\n"
    "def _dump(path=sys.argv[1]):\n"
    "    with open(path, 'w') as fh:\n"
    "        fh.write('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    "atexit.register(_dump)\n"
    "from agent.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def _daemon_modules(tmp: Path, config: Path, port: int, *, push: bool) -> set[str]:
    """Start the daemon, optionally push one ad-hoc command to ``core``, stop it; its modules."""
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
    assert "aiohttp" in modules  # the dump is real: the listener is there
    assert not modules & {"prometheus_client", "_gojsonnet", "cryptography", "apscheduler"}


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
    assert not modules & {"_gojsonnet", "cryptography"}
