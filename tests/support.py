"""The one implementation of every shared test helper: keys, ports, the agent runner, daemons.

Importable as ``support`` from any test directory (``pythonpath = ["tests"]`` in pyproject.toml);
``tests/conftest.py`` re-exports the common ones as fixtures. Keys are Etcha's documented
Ed25519 pair from the interop vectors: ``reqYEklgP4`` is the trusted key (RIGHT), ``ZcxoeWfSRt``
the tutorial's wrong key (WRONG).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
#: The interop vectors (Etcha's documented keys and tokens), copied from ``shared/interop``.
INTEROP_COPY = TESTS_DIR / "data" / "interop_vectors.json"
#: Where shared/ lives beside the repository (CI clones it as ../shared).
SHARED_DIR = REPO.parent / "shared"

RIGHT_PRIV = (
    "ed25519private:MC4CAQAwBQYDK2VwBCIEIBq+BhDRYk8OJv1ksMwKtf0td5p3FGwypXq96gHKefGS:reqYEklgP4"
)
RIGHT_PUB = "ed25519public:MCowBQYDK2VwAyEAw7eTEuEH0+TfgtX3zB+JZVnYD0eskY6qn3n7ZCA7wWM=:reqYEklgP4"
WRONG_PRIV = (
    "ed25519private:MC4CAQAwBQYDK2VwBCIEIE6dSkW4jnn3tx119BKw8+zOmhJyzTOsBlWcjqaHxMcX:ZcxoeWfSRt"
)
WRONG_PUB = "ed25519public:MCowBQYDK2VwAyEAazbRbCTrd21v9xXkRJ1m0fuEGA/ZHRBSmxvus2PhzEs=:ZcxoeWfSRt"

#: How the CLI is started: ``python -m agent``.
AGENT_MODULE: tuple[str, ...] = ("-m", "agent")
#: Seconds a CLI run may take before the test fails (pytest-timeout stops a test at 120).
DEFAULT_TIMEOUT = 110.0


# ------------------------------------------------------------------------------------ ports


def require_tool(path: Path | str, package: str) -> None:
    """Skip the calling test when the system tool ``path`` is missing, except in CI.

    ``.ci/run`` installs every tool (and sets ``AGENT_TEST_SYSTEM=1``); there a missing tool is a
    failure, so a broken install can never turn tests into silent skips.
    """
    if os.path.exists(path):
        return
    message = f"{path} is missing (apt-get install {package}; .ci/run installs it)"
    if os.environ.get("AGENT_TEST_SYSTEM") == "1":
        pytest.fail(message + ", and this is a CI run (AGENT_TEST_SYSTEM=1)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[Any], log: Path, timeout: float = 20) -> None:
    """Wait until something listens on ``port``; fail with ``log`` if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}: {log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"daemon did not listen on {port}: {log.read_text()}")


# ------------------------------------------------------------------------------- the runner


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 20) -> None:
    """Poll ``predicate`` until it is true; fail the test naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sign_pattern_file(src: Path, dest: Path) -> str:
    """Build ``src`` into a token signed with :data:`RIGHT_PRIV`, write it to ``dest``."""
    import asyncio

    from agent.config.schema import config_from_dict
    from agent.pattern.load import load_from_disk
    from agent.tools.build import build_token

    cfg = config_from_dict({"build": {"signingKey": RIGHT_PRIV}})
    token = asyncio.run(build_token(load_from_disk(src, config=cfg, source=""), config=cfg))
    dest.write_text(token)
    return token


def module_set_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess whose loaded modules a test asserts.

    Under ``make unit`` coverage measures subprocesses too (``patch = ["subprocess"]``): its
    start-up hook imports modules of its own (``datetime``, ``inspect``, ``typing``...) before
    any agent code runs, which would make every import-set assertion depend on the test runner.
    These subprocesses run without it; the same code paths are measured by other tests.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG")
    }
    env.update(extra)
    return env


def host_like_env() -> dict[str, str]:
    """:func:`module_set_env` for ``python -S``, to load modules as on a host.

    ``-S`` skips the development venv's ``.pth`` files (its editable-install finder imports
    ``pathlib`` before any agent code runs); the checkout and site-packages go on ``PYTHONPATH``
    instead.
    """
    import site

    root = str(Path(__file__).resolve().parents[1])
    return module_set_env(PYTHONPATH=os.pathsep.join([root, *site.getsitepackages()]))


def run_python(
    code: str, *args: str, cwd: Path | None = None, timeout: float = 60, host_like: bool = False
) -> subprocess.CompletedProcess[str]:
    """``python -c code args...`` in a fresh interpreter with :func:`module_set_env` (text);
    ``host_like``: ``python -S`` with :func:`host_like_env`, to load modules as on a host."""
    flags, env = (["-S"], host_like_env()) if host_like else ([], module_set_env())
    return subprocess.run(
        [sys.executable, *flags, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )


def agent_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for ``agent`` subprocesses.

    The test runner's own ``AGENT_*`` and ``ETCHA_*`` settings are dropped, so a developer's shell
    cannot change what a test sees. This checkout comes first on the Python path and the
    interpreter's bin directory first on PATH, so the standard library's ``agent file …`` helper
    scripts find this ``agent``. ``extra`` is applied last (it may replace PATH).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "ETCHA_"))}
    env["PYTHONPATH"] = str(REPO)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra or {})
    return env


def run_agent(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agent ARGS`` in ``cwd`` as a user would; capture its output as text.

    ``env`` adds to (or replaces entries of) :func:`agent_env`.
    """
    return subprocess.run(
        [sys.executable, *AGENT_MODULE, *args],
        cwd=cwd,
        env=agent_env(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


#: Runs the CLI after dropping to the uid in argv[1] (the interpreter itself may not be readable
#: by it, so this is a ``python -c`` script, not ``-m agent``).
_AS_USER = (
    "import os, sys\n"
    "import agent.cli, agent.cli.file_cmds, agent.core.logs, json, tempfile, urllib.request\n"
    "agent.cli.build_parser()\n"
    "agent.cli.configure_logging(None, None, True)\n"
    "uid = int(sys.argv[1])\n"
    "os.setgroups([]); os.setgid(uid); os.setuid(uid)\n"
    "sys.exit(agent.cli.main(sys.argv[2:]))\n"
)


def run_agent_bytes(
    *args: str,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    as_user: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> subprocess.CompletedProcess[bytes]:
    """:func:`run_agent` with binary stdin and output; ``as_user`` runs the CLI as that uid.

    A run as another user is not measured for coverage: that user cannot write the data file.
    """
    python_args = AGENT_MODULE if as_user is None else ("-c", _AS_USER, str(as_user))
    env = agent_env()
    if as_user is not None:
        env = {k: v for k, v in env.items() if not k.startswith("COVERAGE_PROCESS_")}
    return subprocess.run(
        [sys.executable, *python_args, *args],
        cwd=cwd,
        env=env,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
        check=False,
    )


class RunningAgent(NamedTuple):
    """An ``agent run`` process started by :func:`daemon` and the file its output goes to."""

    proc: subprocess.Popen[str]
    log: Path


@contextmanager
def daemon(
    tmp: Path,
    config: Path,
    port: int | None,
    name: str = "daemon",
    *,
    clean_exit: bool = False,
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stop_timeout: float = 20,
) -> Iterator[RunningAgent]:
    """Run ``agent -c CONFIG run`` in ``tmp`` until the block ends.

    Waits until ``port`` listens (unless it is None). Output goes to ``tmp/NAME.log``. At the end a
    still-running daemon gets SIGTERM (SIGKILL after ``stop_timeout`` seconds). With
    ``clean_exit`` the daemon must then have exited 0 (a kill fails the test). ``prefix`` runs the
    interpreter under another command (e.g. ``prlimit``).
    """
    log = tmp / f"{name}.log"
    argv = [*prefix, sys.executable, *AGENT_MODULE, "-c", str(config), "run"]
    with log.open("w") as fh:
        proc = subprocess.Popen(
            argv, cwd=tmp, env=agent_env(env), stdout=fh, stderr=subprocess.STDOUT, text=True
        )
    try:
        if port is not None:
            wait_port(port, proc, log)
        yield RunningAgent(proc, log)
    finally:
        _stop(proc, log, clean_exit=clean_exit, timeout=stop_timeout)


def _stop(proc: subprocess.Popen[str], log: Path, *, clean_exit: bool, timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            if clean_exit:
                raise
    if clean_exit:
        assert proc.returncode == 0, log.read_text()


# -------------------------------------------------------------------------- config builders


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def config_doc(
    tmp: Path,
    sources: Mapping[str, Any] | None = None,
    *,
    verify_keys: Sequence[Any] = (RIGHT_PUB,),
    run: Mapping[str, Any] | None = None,
    **top: Any,
) -> dict[str, Any]:
    """A config document for a host that trusts ``verify_keys`` (RIGHT_PUB by default) and keeps
    its state in ``tmp/state``; ``run`` adds run settings and ``top`` other top-level sections."""
    run_cfg: dict[str, Any] = {"stateDir": str(tmp / "state"), "verifyKeys": list(verify_keys)}
    run_cfg.update(run or {})
    return {**top, "run": run_cfg, "sources": dict(sources or {})}


def listener_config(
    tmp: Path,
    port: int,
    sources: Mapping[str, Any],
    *,
    tls: bool = False,
    name: str = "server.json",
    **run: Any,
) -> Path:
    """Write ``tmp/NAME``: :func:`config_doc` listening on ``127.0.0.1:PORT`` (plain HTTP unless
    ``tls``), with the ``run`` settings given."""
    listen: dict[str, Any] = {"listenAddress": f"127.0.0.1:{port}"}
    if not tls:
        listen["tlsDisable"] = True
    return write_json(tmp / name, config_doc(tmp, sources, run={**listen, **run}))


def client_config(
    tmp: Path, key: str = RIGHT_PRIV, name: str = "client.json", **build: Any
) -> Path:
    """Write ``tmp/NAME``: a client config that signs with ``key`` (RIGHT_PRIV by default)."""
    return write_json(tmp / name, {"build": {"signingKey": key, **build}})


def push_answer_handler(body: bytes) -> type[http.server.BaseHTTPRequestHandler]:
    """A request handler that reads a POST and answers 200 with the JSON ``body`` (a daemon's
    push answer), quietly: the push target of :func:`tls_http_server` in client-side tests."""

    class _Answer(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return _Answer


def dumped_modules(stderr: str, prefix: str) -> list[str]:
    """The module names a subprocess printed as ``<prefix>=a,b,...`` on stderr (an atexit dump)."""
    line = next(ln for ln in stderr.splitlines() if ln.startswith(f"{prefix}="))
    return line[len(prefix) + 1 :].split(",")


@contextmanager
def tls_http_server(
    directory: Path, handler: type[http.server.BaseHTTPRequestHandler]
) -> Iterator[tuple[int, Path, str]]:
    """A threaded HTTPS server on 127.0.0.1 with a fresh self-signed certificate.

    Yields ``(port, certificate file, "sha256:<hex>" fingerprint)``; stops the server at the end.
    """
    from agent.net.tlsutil import fingerprint_pem, self_signed

    cert, key = self_signed()
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield (
            int(server.server_address[1]),
            directory / "cert.pem",
            fingerprint_pem(cert, what="test"),
        )
    finally:
        server.shutdown()
        server.server_close()
