"""Fleet pushes against real daemons on 127.0.0.1, a closed port and a target that never answers.

Issue 15 point 2: each target prints as soon as it finishes, ``--timeout`` makes a silent target
``UNREACHABLE: timed out after …``, a recap line (or JSON object) ends the output, exit codes
0/1/2 with ``--detailed-exitcode``, ``--forks``/``-j``, ``--serial`` and the no-targets snippet.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support import (
    AGENT_MODULE,
    RIGHT_PRIV,
    agent_env,
    daemon,
    free_port,
    listener_config,
    run_agent,
    write_json,
)

from agent.config.schema import config_from_dict
from agent.tools.push_targets import select_targets

CHANGE = "{run: [{id: 'x', always: true, change: 'true'}]}\n"
NO_CHANGE = "{run: [{id: 'x', check: 'true', change: 'true'}]}\n"
FAIL = "{run: [{id: 'x', always: true, change: 'echo broken >&2; false'}]}\n"


class SilentTarget:
    """A TCP server on 127.0.0.1 that accepts connections and never answers.

    Attributes:
        port: where it listens.
        accepted: set once a connection was accepted.
        client_gone: set once a client closed its connection (gave up).
        peak: the most connections open at once.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.client_gone = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.open = 0
        self.peak = 0
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with self.lock:
                # A client that already closed may not have been noticed by its holder thread
                # yet: count only the connections whose client has not sent EOF.
                still_open = sum(1 for c in self.conns if not _client_closed(c))
                self.conns.append(conn)
                self.open += 1
                self.peak = max(self.peak, still_open + 1)
            self.accepted.set()
            thread = threading.Thread(target=self._hold, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _hold(self, conn: socket.socket) -> None:
        """Read and ignore until the client leaves or the test releases it."""
        conn.settimeout(0.1)
        with conn:
            while not self.release.is_set():
                try:
                    if not conn.recv(65536):
                        self.client_gone.set()
                        break
                except TimeoutError:
                    continue
                except OSError:
                    self.client_gone.set()
                    break
        with self.lock:
            self.open -= 1
            self.conns.remove(conn)


def _client_closed(conn: socket.socket) -> bool:
    """Whether the client of ``conn`` closed it (EOF is waiting), without consuming data."""
    try:
        if not select.select([conn], [], [], 0)[0]:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


@contextmanager
def silent_target() -> Iterator[SilentTarget]:
    target = SilentTarget()
    acceptor = threading.Thread(target=target.serve, daemon=True)
    acceptor.start()
    try:
        yield target
    finally:
        target.release.set()
        target.sock.close()
        acceptor.join(timeout=5)
        for thread in target.threads:
            thread.join(timeout=5)


def http_target(port: int, pattern: str = "", name: str = "") -> dict[str, Any]:
    """A plain-HTTP target; ``name`` goes into its vars, so that targets sharing one daemon get
    distinct tokens (the daemon refuses a token it has seen: replay protection)."""
    return {
        "hostname": "127.0.0.1",
        "insecure": True,
        "port": str(port),
        "sourcePatterns": {"core": pattern},
        "vars": {"target": name},
    }


def fleet_client(tmp: Path, targets: Mapping[str, Any], **build: Any) -> Path:
    doc = {"build": {"signingKey": RIGHT_PRIV, **build}, "targets": dict(targets)}
    return write_json(tmp / "client.json", doc)


def patterns(tmp: Path) -> dict[str, str]:
    out = {}
    for name, text in (("change", CHANGE), ("same", NO_CHANGE), ("fail", FAIL)):
        path = tmp / f"{name}.jsonnet"
        path.write_text(text)
        out[name] = str(path)
    return out


def blocks(stdout: str) -> dict[str, list[str]]:
    """The target blocks of a human push output (without the recap), by target name."""
    out: dict[str, list[str]] = {}
    current: list[str] = []
    for line in stdout.splitlines()[:-1]:
        if line.startswith("    "):
            current.append(line.strip())
        else:
            current = out.setdefault(line.removesuffix(":"), [])
    return out


@contextmanager
def core_daemon(tmp: Path) -> Iterator[int]:
    port = free_port()
    cfg = listener_config(tmp, port, {"core": {"allowPush": True}})
    with daemon(tmp, cfg, port):
        yield port


# ------------------------------------------------------------------------------- streaming


def test_fast_target_prints_while_a_slow_target_is_still_blocked(tmp_path: Path) -> None:
    pats = patterns(tmp_path)
    with core_daemon(tmp_path) as port, silent_target() as slow:
        # "a-slow" sorts first: in name order its block would come first.
        client = fleet_client(
            tmp_path,
            {"a-slow": http_target(slow.port), "b-fast": http_target(port, pats["change"])},
        )
        argv = [sys.executable, *AGENT_MODULE, "-c", str(client), "push", "--timeout", "90s"]
        proc = subprocess.Popen(
            [*argv, "core", pats["change"]],
            cwd=tmp_path,
            env=agent_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            first, second = proc.stdout.readline(), proc.stdout.readline()
            # The fast block arrived while the slow target still holds its connection open.
            assert (first, second) == ("b-fast:\n", "    Changed 1: x\n")
            assert slow.accepted.is_set() and not slow.client_gone.is_set()
            assert proc.poll() is None
            slow.release.set()  # now the slow target hangs up without answering
            rest, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 1, err
    lines = rest.splitlines()
    assert lines[0] == "a-slow:"
    assert lines[1].startswith("    UNREACHABLE: error performing request:")
    assert lines[-1] == "2 targets: 1 changed, 0 unchanged, 0 failed, 1 unreachable"


# ------------------------------------------------------------------------ timeout and recap


def test_fleet_recap_and_a_silent_target_timed_out_as_unreachable(tmp_path: Path) -> None:
    pats = patterns(tmp_path)
    with core_daemon(tmp_path) as port, silent_target() as silent:
        targets = {
            "t1": http_target(port, pats["change"], "t1"),
            "t2": http_target(port, pats["change"], "t2"),
            "t3": http_target(port, pats["same"], "t3"),
            "t4": http_target(port, pats["fail"], "t4"),
            "t5": http_target(silent.port, pats["change"]),
        }
        client = fleet_client(tmp_path, targets)
        # 10s: the four pushes to the one daemon queue behind each other on a loaded machine.
        r = run_agent("-c", str(client), "push", "--timeout", "10s", "core", cwd=tmp_path)
        assert silent.client_gone.wait(10)  # the push hung up on it
    assert r.returncode == 1, r.stderr
    got = blocks(r.stdout)
    assert got["t1"] == got["t2"] == ["Changed 1: x"]
    assert got["t3"] == ["No changes"]
    assert got["t4"][0].startswith("ERROR: ") and "[None]" not in got["t4"][0]
    assert got["t5"] == [
        f"UNREACHABLE: timed out after 10s waiting for 127.0.0.1:{silent.port} (connect, TLS "
        "handshake and answer; --timeout or build.pushTimeout)"
    ]
    assert r.stdout.splitlines()[-1] == (
        "5 targets: 2 changed, 1 unchanged, 1 failed, 1 unreachable"
    )


def test_push_timeout_config_bounds_the_tls_handshake(tmp_path: Path) -> None:
    with silent_target() as silent:
        client = write_json(
            tmp_path / "client.json", {"build": {"signingKey": RIGHT_PRIV, "pushTimeout": "1s"}}
        )
        host = ("-h", "127.0.0.1", "-p", str(silent.port))  # https: stuck in the handshake
        r = run_agent("-c", str(client), "push", *host, "core", "true", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stdout.splitlines()[1].startswith("    UNREACHABLE: timed out after 1s waiting for")
    assert r.stdout.splitlines()[-1] == "1 target: 0 changed, 0 unchanged, 0 failed, 1 unreachable"


def test_refused_target_is_unreachable_with_the_real_reason(tmp_path: Path) -> None:
    client = fleet_client(tmp_path, {"gone": http_target(free_port())})
    r = run_agent("-c", str(client), "push", "core", "true", cwd=tmp_path)
    assert r.returncode == 1
    line = blocks(r.stdout)["gone"][0]
    assert line.startswith("UNREACHABLE: error performing request:")
    assert "Connection refused" in line and "None" not in line


def test_bad_timeout_is_a_usage_error(tmp_path: Path) -> None:
    client = fleet_client(tmp_path, {})
    r = run_agent("-c", str(client), "push", "--timeout", "soon", "core", "true", cwd=tmp_path)
    assert r.returncode == 2
    assert "--timeout: expected a duration such as 30s" in r.stderr


# ------------------------------------------------------------------------------------ JSON


def test_json_format_prints_one_object_per_target_then_the_recap(tmp_path: Path) -> None:
    pats = patterns(tmp_path)
    with core_daemon(tmp_path) as port:
        targets = {
            "ok": http_target(port, pats["change"]),
            "gone": http_target(free_port(), pats["change"]),
        }
        client = fleet_client(tmp_path, targets)
        r = run_agent("-f", "json", "-c", str(client), "push", "core", cwd=tmp_path)
    assert r.returncode == 1
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(docs) == 3
    by_target = {d["target"]: d for d in docs[:2]}
    assert by_target["ok"] == {
        "target": "ok",
        "status": "changed",
        "check": False,
        "err": "",
        "changedIDs": ["x"],
        "changedOutputs": [""],
        "removedIDs": [],
    }
    assert by_target["gone"]["status"] == "unreachable"
    assert "Connection refused" in by_target["gone"]["err"]
    assert docs[2] == {
        "recap": {
            "targets": 2,
            "changed": 1,
            "unchanged": 0,
            "failed": 0,
            "unreachable": 1,
            "skipped": 0,
        }
    }


# ------------------------------------------------------------------------------ exit codes


def test_exit_codes_with_and_without_detailed_exitcode(tmp_path: Path) -> None:
    pats = patterns(tmp_path)
    with core_daemon(tmp_path) as port:
        host = ("-h", "http://127.0.0.1", "-p", str(port))

        def code(*args: str) -> int:
            r = run_agent("-c", str(fleet_client(tmp_path, {})), "push", *args, cwd=tmp_path)
            return r.returncode

        assert code(*host, "core", pats["change"]) == 0  # changed, plain exit codes
        assert code("--detailed-exitcode", *host, "core", pats["change"]) == 2
        assert code("--detailed-exitcode", "-c", *host, "core", pats["change"]) == 2  # would
        assert code("--detailed-exitcode", *host, "core", pats["same"]) == 0
        assert code("--detailed-exitcode", "-c", *host, "core", pats["same"]) == 0
        assert code("--detailed-exitcode", *host, "core", pats["fail"]) == 1
        gone = ("-h", "http://127.0.0.1", "-p", str(free_port()))
        assert code("--detailed-exitcode", *gone, "core", pats["change"]) == 1


# ------------------------------------------------------------------------ forks and serial


def test_forks_and_j_override_push_max_workers(tmp_path: Path) -> None:
    for flag, workers, config_workers in (("--forks", "3", 1), ("-j", "1", 4)):
        with silent_target() as silent:
            targets = {f"t{i}": http_target(silent.port) for i in range(3)}
            client = fleet_client(tmp_path, targets, pushMaxWorkers=config_workers)
            args = ("push", flag, workers, "--timeout", "1s", "core", "true")
            r = run_agent("-c", str(client), *args, cwd=tmp_path)
            assert r.returncode == 1
            assert r.stdout.splitlines()[-1].endswith("3 unreachable")
            assert silent.peak == int(workers), flag


def test_serial_stops_after_a_batch_with_a_failure(tmp_path: Path) -> None:
    pats = patterns(tmp_path)
    marker = tmp_path / "late-batch-ran"
    late = tmp_path / "late.jsonnet"
    late.write_text(f"{{run: [{{id: 'late', always: true, change: 'touch {marker}'}}]}}\n")
    with core_daemon(tmp_path) as port:
        targets = {
            "a": http_target(port, pats["change"], "a"),
            "b": http_target(port, pats["fail"], "b"),
            "c": http_target(port, str(late), "c"),
            "d": http_target(port, str(late), "d"),
        }
        client = fleet_client(tmp_path, targets)
        r = run_agent("-c", str(client), "push", "--serial", "2", "core", cwd=tmp_path)
    assert r.returncode == 1
    got = blocks(r.stdout)
    assert got["a"] == ["Changed 1: x"]
    assert got["b"][0].startswith("ERROR: ")
    skipped = "SKIPPED: not pushed: batch 1 of --serial 2 had a failure"
    assert got["c"] == got["d"] == [skipped]
    assert not marker.exists()
    assert r.stdout.splitlines()[-1] == (
        "4 targets: 1 changed, 0 unchanged, 1 failed, 0 unreachable, 2 skipped"
    )


def test_serial_pushes_every_batch_when_none_fails(tmp_path: Path) -> None:
    pats = patterns(tmp_path)
    with core_daemon(tmp_path) as port:
        targets = {name: http_target(port, pats["same"], name) for name in ("a", "b", "c")}
        client = fleet_client(tmp_path, targets)
        r = run_agent("-c", str(client), "push", "--serial", "1", "core", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [line for line in r.stdout.splitlines() if not line.startswith(" ")] == [
        "a:",
        "b:",
        "c:",
        "3 targets: 0 changed, 3 unchanged, 0 failed, 0 unreachable",
    ]


# ---------------------------------------------------------------------------- no targets


def test_no_targets_error_shows_the_config_snippet_and_h_host(tmp_path: Path) -> None:
    client = fleet_client(tmp_path, {"db": http_target(free_port()) | {"sourcePatterns": {}}})
    r = run_agent("-c", str(client), "push", "web", "site.jsonnet", cwd=tmp_path)
    assert r.returncode == 2
    snippet = (
        '"targets": {"web1": {"hostname": "web1.example.com", '
        '"sourcePatterns": {"web": "site.jsonnet"}}}'
    )
    assert snippet in r.stderr
    assert "agent push -h HOST web site.jsonnet" in r.stderr
    # The snippet, pasted into a config, gives the push a target.
    config = config_from_dict(json.loads("{" + snippet + "}"))
    assert [t.name for t in select_targets(config, "web")] == ["web1"]


# ---------------------------------------------------------------------- failures and -v


def test_push_lists_a_failed_command_as_failed_with_its_output_and_v_prints_outputs(
    tmp_path: Path,
) -> None:
    """Issue 15 point 1 through a real daemon: `Failed N:` never inside `Changed`; -v outputs."""
    pattern = tmp_path / "mixed.jsonnet"
    pattern.write_text(
        "{run: [{id: 'ok', always: true, change: 'echo ok-output'},"
        " {id: 'bad', always: true, change: 'echo bad-output; exit 3'}]}\n"
    )
    with core_daemon(tmp_path) as port:
        host = ("-h", "http://127.0.0.1", "-p", str(port))
        client = str(fleet_client(tmp_path, {}))
        plain = run_agent("-c", client, "push", *host, "core", str(pattern), cwd=tmp_path)
        verbose = run_agent("-c", client, "push", "-v", *host, "core", str(pattern), cwd=tmp_path)
    assert plain.returncode == 1
    assert "Changed 1: ok" in plain.stdout
    assert "Failed 1: bad" in plain.stdout
    assert "Changed 2" not in plain.stdout
    assert "bad-output" in plain.stdout  # a failure's output is shown without -v
    assert "ok-output" not in plain.stdout
    assert verbose.returncode == 1
    assert "ok-output" in verbose.stdout and "bad-output" in verbose.stdout
