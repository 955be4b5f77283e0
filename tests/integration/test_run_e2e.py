"""End to end: `agent run` as a real process on 127.0.0.1, driven by `agent push` and by files.

Covers Etcha's push/pull tutorial (Changed 2 → Changed 1 + Removed 2 → No changes; the wrong key
is refused), TLS by default, pull from a file on a schedule, restart restoring state, 413, run -o
exit codes, queued concurrent pushes, and SIGTERM in the middle of a run.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support import (
    WRONG_PRIV,
    agent_env,
    client_config,
    daemon,
    free_port,
    listener_config,
    run_agent,
    sign_pattern_file,
    wait_for,
    write_json,
)

pytestmark = pytest.mark.integration


def stop(proc: subprocess.Popen[str], log: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    assert rc == 0, log.read_text()
    return rc


def file_cmd(cid: str, path: Path) -> str:
    return (
        f"{{id: {json.dumps(cid)}, check: 'test -f {path}', change: 'touch {path}', "
        f"remove: 'rm -f {path}'}}"
    )


def pattern(tmp: Path, name: str, *cmds: str) -> Path:
    path = tmp / name
    path.write_text("{run: [" + ", ".join(cmds) + "]}\n")
    return path


# ---------------------------------------------------------------------------- tutorial


def test_push_tutorial_end_to_end(tmp_path: Path) -> None:
    port = free_port()
    cfg = listener_config(tmp_path, port, {"core": {"allowPush": True}})
    client = client_config(tmp_path)
    wrong = client_config(tmp_path, WRONG_PRIV, name="wrong.json")
    copy, write, hello = tmp_path / "copied", tmp_path / "written", tmp_path / "hello"
    first = pattern(
        tmp_path, "first.jsonnet", file_cmd("copy file", copy), file_cmd("write a file", write)
    )
    second = pattern(tmp_path, "second.jsonnet", file_cmd("hello", hello))
    host = ["-h", "http://127.0.0.1", "-p", str(port)]

    with daemon(tmp_path, cfg, port) as (proc, log):
        r1 = run_agent("-c", str(client), "push", *host, "core", str(first), cwd=tmp_path)
        assert r1.returncode == 0, r1.stderr
        assert r1.stdout == (
            "http://127.0.0.1:\n    Changed 2: copy file, write a file\n"
            "1 target: 1 changed, 0 unchanged, 0 failed, 0 unreachable\n"
        )
        assert copy.exists() and write.exists()

        r2 = run_agent("-c", str(client), "push", *host, "core", str(second), cwd=tmp_path)
        assert r2.returncode == 0, r2.stderr
        assert r2.stdout.splitlines()[1:-1] == [
            "    Changed 1: hello",
            "    Removed 2: write a file, copy file",
        ]
        assert not copy.exists() and not write.exists() and hello.exists()

        r3 = run_agent("-c", str(client), "push", *host, "core", str(second), cwd=tmp_path)
        assert r3.returncode == 0
        assert r3.stdout.splitlines()[1:-1] == ["    No changes"]

        r4 = run_agent("-c", str(wrong), "push", *host, "core", str(first), cwd=tmp_path)
        assert r4.returncode == 1
        assert r4.stdout.splitlines()[1:-1] == ["    ERROR: push didn't match any sources"]
        assert not copy.exists()

        r5 = run_agent("-c", str(client), "push", "-c", *host, "core", str(first), cwd=tmp_path)
        assert r5.returncode == 0
        assert r5.stdout.splitlines()[1:-1] == [
            "    Would change 2: copy file, write a file",
            "    Would remove 1: hello",
        ]
        assert hello.exists() and not copy.exists()

        r6 = run_agent("-c", str(client), "push", *host, "core", "echo", "hi there", cwd=tmp_path)
        assert r6.returncode == 0
        assert r6.stdout.splitlines()[1:-1] == ["    hi there"]
        stop(proc, log)
    text = log.read_text()
    assert "did not verify" in text


def test_tls_listener_by_default_with_skip_verify_client(tmp_path: Path) -> None:
    port = free_port()
    cfg = listener_config(tmp_path, port, {"core": {"allowPush": True}}, tlsDisable=False)
    strict = client_config(tmp_path)
    lax = client_config(tmp_path, name="lax.json", tlsSkipVerify=True)
    marker = tmp_path / "m"
    pat = pattern(tmp_path, "p.jsonnet", file_cmd("m", marker))
    with daemon(tmp_path, cfg, port) as (proc, log):
        host = ["-h", "127.0.0.1", "-p", str(port)]
        refused = run_agent("-c", str(strict), "push", *host, "core", str(pat), cwd=tmp_path)
        assert refused.returncode == 1
        assert "ERROR: error performing request" in refused.stdout
        assert not marker.exists()
        ok = run_agent("-c", str(lax), "push", *host, "core", str(pat), cwd=tmp_path)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "Changed 1: m" in ok.stdout
        stop(proc, log)


# ---------------------------------------------------------------------------- pull, restart


def test_pull_from_file_on_schedule_and_restart_restores_state(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    jwt = tmp_path / "pull.jwt"
    sign_pattern_file(pattern(tmp_path, "a.jsonnet", file_cmd("a", a)), jwt)
    port = free_port()
    cfg = listener_config(tmp_path, port, {"p": {"pullPaths": [str(jwt)], "runFrequency": "1s"}})
    with daemon(tmp_path, cfg, port) as (proc, log):
        assert a.exists()  # the start-up pull ran before the listener came up
        a.unlink()
        wait_for(a.exists, what="drift correction on the next tick")
        sign_pattern_file(pattern(tmp_path, "b.jsonnet", file_cmd("b", b)), jwt)
        wait_for(lambda: b.exists() and not a.exists(), what="the new pulled pattern")
        stop(proc, log)
    state = (tmp_path / "state" / "p.jwt").read_text().strip()
    assert state == jwt.read_text().strip()

    # Restart without the pull file: the cached token is re-verified and run.
    jwt.unlink()
    b.unlink()
    with daemon(tmp_path, cfg, port, name="restart") as (proc, log):
        assert b.exists()
        stop(proc, log)
    assert "Loading cached config for p" in log.read_text()


# ---------------------------------------------------------------------------- limits, modes


def test_oversized_body_gets_413(tmp_path: Path) -> None:
    port = free_port()
    cfg = listener_config(tmp_path, port, {"core": {"allowPush": True}}, maxTokenBytes=1024)
    with daemon(tmp_path, cfg, port) as (proc, log):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/etcha/v1/push/core", data=b"x" * 4096, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 413
        err.value.close()
        get = urllib.request.Request(f"http://127.0.0.1:{port}/etcha/v1/push/core")
        with pytest.raises(urllib.error.HTTPError) as err405:
            urllib.request.urlopen(get, timeout=10)
        assert err405.value.code == 405
        err405.value.close()
        stop(proc, log)


def test_run_once_exit_codes(tmp_path: Path) -> None:
    ok = tmp_path / "ok"
    good = write_json(
        tmp_path / "good.json",
        {
            "run": {"stateDir": str(tmp_path / "state")},
            "sources": {"s": {"commands": [{"id": "ok", "always": True, "change": f"touch {ok}"}]}},
        },
    )
    bad = write_json(
        tmp_path / "bad.json",
        {
            "run": {"stateDir": str(tmp_path / "state")},
            "sources": {
                "s": {"commands": [{"id": "ok", "always": True, "change": "true"}]},
                "t": {"commands": [{"id": "no", "always": True, "change": "exit 4"}]},
            },
        },
    )
    no_verifier = write_json(tmp_path / "nov.json", {"sources": {"web": {"allowPush": True}}})
    r_good = run_agent("-c", str(good), "run", "-o", cwd=tmp_path)
    assert r_good.returncode == 0, r_good.stderr
    assert ok.exists()
    assert run_agent("-c", str(bad), "run", "-o", cwd=tmp_path).returncode == 1
    refused = run_agent("-c", str(no_verifier), "run", "-o", cwd=tmp_path)
    assert refused.returncode == 1
    assert "sources.web" in refused.stderr and "verifyKeys" in refused.stderr


def test_concurrent_pushes_are_queued_and_neither_is_lost(tmp_path: Path) -> None:
    port = free_port()
    cfg = listener_config(tmp_path, port, {"core": {"allowPush": True}})
    client = client_config(tmp_path)
    log_file = tmp_path / "runs.log"
    env = agent_env()

    def cmd(name: str) -> str:
        return (
            f"echo start {name} $(date +%s.%N) >> {log_file}; sleep 0.8; "
            f"echo end {name} $(date +%s.%N) >> {log_file}"
        )

    with daemon(tmp_path, cfg, port) as (proc, log):
        pushes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agent",
                    "-c",
                    str(client),
                    "push",
                    "-h",
                    "http://127.0.0.1",
                    "-p",
                    str(port),
                    "core",
                    cmd(name),
                ],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in ("one", "two")
        ]
        outs = [p.communicate(timeout=60) for p in pushes]
        assert [p.returncode for p in pushes] == [0, 0], outs
        stop(proc, log)
    spans: dict[str, list[float]] = {}
    for line in log_file.read_text().splitlines():
        _, name, ts = line.split()
        spans.setdefault(name, []).append(float(ts))
    assert sorted(spans) == ["one", "two"]
    (_s1, e1), (s2, _e2) = sorted((v[0], v[1]) for v in spans.values())
    assert s2 >= e1  # the second waited for the first


def test_sigterm_during_a_run_finishes_it_saves_state_and_exits_zero(tmp_path: Path) -> None:
    port = free_port()
    cfg = listener_config(tmp_path, port, {"core": {"allowPush": True}})
    client = client_config(tmp_path)
    started, done = tmp_path / "started", tmp_path / "done"
    slow = pattern(
        tmp_path,
        "slow.jsonnet",
        f"{{id: 'slow', check: 'test -f {done}', "
        f"change: 'touch {started}; sleep 1.5; touch {done}'}}",
    )
    env = agent_env()
    with daemon(tmp_path, cfg, port) as (proc, log):
        pusher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "-c",
                str(client),
                "push",
                "-h",
                "http://127.0.0.1",
                "-p",
                str(port),
                "core",
                str(slow),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(started.exists, what="the run to start")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        out, err = pusher.communicate(timeout=30)
    assert rc == 0, log.read_text()
    assert done.exists()
    assert pusher.returncode == 0, out + err
    assert "Changed 1: slow" in out
    state = tmp_path / "state" / "core.jwt"
    assert state.exists() and state.read_text().count(".") == 2
    assert not [p for p in state.parent.iterdir() if p.name.endswith(".tmp")]


def test_systemd_notifications_sighup_reload_and_sigint_stop(tmp_path: Path) -> None:
    port = free_port()
    cfg = listener_config(tmp_path, port, {"core": {"allowPush": True}})
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(20)
        notify = {"NOTIFY_SOCKET": str(sock_path)}
        with daemon(tmp_path, cfg, port, "sd", env=notify) as (proc, log):
            assert sock.recv(4096) == b"READY=1"
            # Change the config, then SIGHUP: the daemon reports what changed and keeps serving.
            added = tmp_path / "added"
            extra = {
                "commands": [{"id": "x", "check": f"test -f {added}", "change": f"touch {added}"}]
            }
            listener_config(tmp_path, port, {"core": {"allowPush": True}, "extra": extra})
            while sock.recv(4096) != b"STATUS=running 1 source(s)":
                pass
            proc.send_signal(signal.SIGHUP)
            assert sock.recv(4096).startswith(b"RELOADING=1")
            assert sock.recv(4096) == b"READY=1"
            wait_for(lambda: "SIGHUP: config sections" in log.read_text(), what="the reload")
            assert added.exists()  # the added source was loaded and run
            assert proc.poll() is None
            proc.send_signal(signal.SIGINT)
            assert sock.recv(4096) == b"STOPPING=1"
            assert proc.wait(timeout=30) == 0
    text = log.read_text()
    assert "SIGHUP: config sections changed: sources" in text
    assert "SIGHUP: source extra added" in text
    assert "Received SIGINT" in text
