"""Helpers shared by the example run scripts and ``examples/demo.py`` (stdlib only).

Every step an example shows is a real command: ``agent`` (the installed entry point next to the
running Python, else ``python -m agent``), ``openssl`` or ``curl``, run as a subprocess and printed
as ``$ command`` followed by its output. Nothing is simulated.

Invariants:

- A daemon started with :func:`daemon` runs in its own process group; leaving the ``with`` block,
  normally or by an exception, sends SIGTERM, waits, and kills the group if it is still there.
- Children never inherit ``AGENT_*``/``ETCHA_*`` variables from the caller, so an example's
  config is exactly its files plus the ``-x`` overrides shown on screen; the directory holding the
  ``agent`` entry point is put first on ``PATH`` (the standard library's helpers run ``agent``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
REPO = EXAMPLES.parent


class StepFailed(Exception):
    """A step did not do what the example expects (the message says what and what happened)."""


def agent_argv() -> list[str]:
    """The argv prefix that runs the agent: the installed entry point, else ``python -m agent``."""
    entry = Path(sys.executable).with_name("agent")
    if entry.exists():
        return [str(entry)]
    return [sys.executable, "-m", "agent"]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for every child: no ``AGENT_*``/``ETCHA_*``, the agent first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "ETCHA_"))}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    if len(agent_argv()) > 1:  # python -m agent from a checkout that is not installed
        env["PYTHONPATH"] = str(REPO)
    env["NO_COLOR"] = "1"
    env.update(extra or {})
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Tour:
    """Prints numbered steps and the commands they run.

    Attributes:
        cwd: the work directory every command runs in.
        step_no: the last step number printed.
    """

    cwd: Path
    step_no: int = 0

    def step(self, title: str, why: str = "") -> None:
        """Print ``N. title`` and a one-line explanation."""
        self.step_no += 1
        print(f"\n{self.step_no}. {title}", flush=True)
        if why:
            print(f"   {why}", flush=True)

    def note(self, text: str) -> None:
        """Print an indented remark."""
        print(f"   {text}", flush=True)

    def run(
        self,
        argv: Sequence[str],
        *,
        expect_rc: int | None = 0,
        show: str | None = None,
        stdin: str | None = None,
        quiet: bool = False,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the work dir, print it and its output; check the exit code.

        Args:
            argv: the command; a leading ``"agent"`` is replaced by :func:`agent_argv`.
            expect_rc: the exit code the step expects (None: any).
            show: the command line to print instead of ``argv`` (e.g. to shorten a path).
            stdin: text for the command's stdin.
            quiet: do not print the output.
            timeout: seconds before the command is killed.

        Returns:
            The completed process.

        Raises:
            StepFailed: the exit code differs from ``expect_rc``.
        """
        real = list(argv)
        if real and real[0] == "agent":
            real = agent_argv() + real[1:]
        shown = show if show is not None else shlex.join(argv)
        print(f"   $ {shown}", flush=True)
        proc = subprocess.run(
            real,
            cwd=self.cwd,
            env=child_env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if not quiet:
            for line in (proc.stdout + proc.stderr).rstrip("\n").splitlines():
                print(f"     {line}", flush=True)
        if expect_rc is not None and proc.returncode != expect_rc:
            if quiet:
                print(proc.stdout + proc.stderr, file=sys.stderr)
            raise StepFailed(f"{shown}: expected exit {expect_rc}, got {proc.returncode}")
        return proc

    def expect(self, proc: subprocess.CompletedProcess[str], *needles: str) -> None:
        """Raise unless every needle occurs in the command's stdout.

        Raises:
            StepFailed: a needle is missing.
        """
        for needle in needles:
            if needle not in proc.stdout:
                raise StepFailed(f"expected {needle!r} in the output, got {proc.stdout!r}")


def work_dir(argv: Sequence[str], name: str) -> contextlib.AbstractContextManager[Path]:
    """The work directory: ``argv[0]`` when given (kept), else a temporary one (removed)."""
    if argv:
        path = Path(argv[0]).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return contextlib.nullcontext(path)
    return _temp_dir(name)


@contextlib.contextmanager
def _temp_dir(name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"agent-{name}-") as tmp:
        yield Path(tmp)


def copy_example(example: str, dest: Path) -> None:
    """Copy ``examples/<example>`` (config, patterns, helper files) into ``dest``."""
    src = EXAMPLES / example
    for item in src.iterdir():
        if item.name in ("README.md", "run.py", "__pycache__"):
            continue
        target = dest / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)


def write_keys(tour: Tour, kid: str) -> None:
    """``agent generate-keys --private-file signing.key --public-file public.key`` (0600, 0644)."""
    keys = ["--private-file", "signing.key", "--public-file", "public.key"]
    tour.run(["agent", "generate-keys", kid, *keys], quiet=True)
    tour.note(f"signing.key: ed25519private:… (kept secret, mode 0600); public.key: {kid}")


def write_tls(tour: Tour) -> None:
    """A self-signed certificate for 127.0.0.1/localhost made by openssl: ``tls/cert.pem``+key.

    The certificate is its own CA: the daemon serves it (``run.tlsCertificatePath``), and clients
    trust exactly it (``httpClient.caFile``, ``curl --cacert``), so TLS verification stays on.
    """
    (tour.cwd / "tls").mkdir(exist_ok=True)
    tour.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            "tls/key.pem",
            "-out",
            "tls/cert.pem",
        ],
        quiet=True,
    )
    os.chmod(tour.cwd / "tls" / "key.pem", 0o600)


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 20) -> None:
    """Poll ``predicate`` every 50 ms.

    Raises:
        StepFailed: it was still false after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise StepFailed(f"expected {what} within {timeout:.0f}s, it did not happen")


@dataclass
class Daemon:
    """A running ``agent run``: its process, port and log file."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def log_lines(self) -> list[str]:
        """The daemon's log so far."""
        return self.log.read_text(errors="replace").splitlines()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_daemon(d: Daemon, *, grace: float = 20) -> int:
    """SIGTERM the daemon's process group, wait, then SIGKILL the group if needed.

    Returns:
        The daemon's exit code (negative: killed by that signal).
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(d.proc.pid, signal.SIGTERM)
    try:
        rc = d.proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        rc = None
    # The group may hold children (a command still running); never leave any behind.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(d.proc.pid, signal.SIGKILL)
    if rc is None:
        rc = d.proc.wait(timeout=10)
    return rc


@contextlib.contextmanager
def daemon(
    tour: Tour, args: Sequence[str], port: int, *, show: str = "", ready_text: str = ""
) -> Iterator[Daemon]:
    """Start ``agent <args>`` (an ``agent run``) in its own process group and wait for its port.

    Args:
        tour: prints the command; its ``cwd`` is the daemon's work dir.
        args: the agent arguments (without the leading ``agent``).
        port: the port the config makes it listen on (0: it does not listen).
        show: the command line to print.
        ready_text: with ``port`` 0, the log text that shows it is up.

    Yields:
        The running daemon. On exit it is stopped (SIGTERM, wait, SIGKILL of the group).

    Raises:
        StepFailed: it exited or did not listen within 20 s.
    """
    log = tour.cwd / "daemon.log"
    print(f"   $ {show or shlex.join(['agent', *args])} &   # log: daemon.log", flush=True)
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [*agent_argv(), *args],
            cwd=tour.cwd,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    d = Daemon(proc, port, log)
    try:
        what = f"agent run to listen on 127.0.0.1:{port}" if port else repr(ready_text)
        wait_for(what, lambda: _ready(d, ready_text), timeout=30)
        yield d
    except BaseException:
        print("   --- daemon.log ---", file=sys.stderr)
        print(log.read_text(errors="replace"), file=sys.stderr)
        raise
    finally:
        stop_daemon(d)


def _ready(d: Daemon, ready_text: str) -> bool:
    if d.proc.poll() is not None:
        raise StepFailed(f"agent run exited with {d.proc.returncode}: {d.log.read_text()[-2000:]}")
    if not d.port:
        return ready_text in d.log.read_text(errors="replace")
    return _listening(d.port)


def print_log(d: Daemon, start: int, *, contains: Sequence[str] = ()) -> int:
    """Print the daemon log lines after line ``start`` (only those with one of ``contains``).

    Returns:
        The number of lines in the log now (the next ``start``).
    """
    lines = d.log_lines()
    for line in lines[start:]:
        if not contains or any(c in line for c in contains):
            print(f"     daemon.log: {line}", flush=True)
    return len(lines)


def main_wrapper(body: Callable[[Sequence[str]], None]) -> int:
    """Run an example's body with ``sys.argv[1:]``; print a one-line failure and return 1.

    Returns:
        0 on success, 1 when a step failed.
    """
    try:
        body(sys.argv[1:])
    except (StepFailed, subprocess.TimeoutExpired) as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    print("\nDone.", flush=True)
    return 0
