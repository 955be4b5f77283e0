"""Ask a host what it runs: ``GET /etcha/v1/system/status`` and ``agent status`` against a real
daemon (issue 15, point 8), and the one summary line per run (point 4)."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from support import (
    WRONG_PRIV,
    client_config,
    daemon,
    free_port,
    listener_config,
    run_agent,
    wait_for,
    write_json,
)

pytestmark = pytest.mark.integration

KEY = "s3cret-status-key"


class Host(NamedTuple):
    tmp: Path
    port: int
    log: Path
    client: Path


def get(port: int, headers: dict[str, str] | None = None, query: str = "") -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{port}/etcha/v1/system/status{query}"
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def status(port: int) -> dict[str, Any]:
    code, body = get(port, {"Authorization": f"Bearer {KEY}"})
    assert code == 200, body
    doc = json.loads(body)
    assert isinstance(doc, dict)
    return doc


def web(port: int) -> dict[str, Any]:
    src = status(port)["sources"]["web"]
    assert isinstance(src, dict)
    return src


def write_pattern(tmp: Path, name: str, *commands: str) -> Path:
    path = tmp / name
    path.write_text("{run: [" + ", ".join(commands) + "]}\n")
    return path


def touch(cid: str, path: Path) -> str:
    return (
        f"{{id: {json.dumps(cid)}, check: 'test -f {path}', change: 'touch {path}', "
        f"remove: 'rm -f {path}'}}"
    )


@pytest.fixture
def host(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Host]:
    """A daemon with one push source, ``web``, ticking every ``runFrequency`` (an indirect
    parameter, default 1s)."""
    frequency = str(getattr(request, "param", "1s"))
    port = free_port()
    sources = {"web": {"allowPush": True, "runFrequency": frequency}}
    cfg = listener_config(tmp_path, port, sources, systemMetricsKey=KEY)
    client = client_config(tmp_path)
    with daemon(tmp_path, cfg, port) as running:
        yield Host(tmp_path, port, running.log, client)


def push(h: Host, pattern: Path, client: Path | None = None) -> Any:
    return run_agent(
        "-c",
        str(client or h.client),
        "push",
        "-h",
        f"http://127.0.0.1:{h.port}",
        "web",
        str(pattern),
        cwd=h.tmp,
    )


def test_status_needs_the_metrics_key(host: Host) -> None:
    assert get(host.port)[0] == 401
    assert get(host.port, {"Authorization": "Bearer wrong"})[0] == 401
    assert get(host.port, query="?key=wrong")[0] == 401
    assert get(host.port, query=f"?key={KEY}")[0] == 200
    code, body = get(host.port, {"Authorization": f"Bearer {KEY}"})
    assert code == 200
    assert set(json.loads(body)["sources"]) == {"web"}


def test_status_reports_a_tick(host: Host) -> None:
    ok = push(host, write_pattern(host.tmp, "ok.jsonnet", touch("make a", host.tmp / "a")))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the next tick re-runs the stored pattern: checks only, nothing changes
    wait_for(lambda: web(host.port)["lastRun"]["trigger"] == "pull", "a tick")
    src = web(host.port)
    assert src["lastRun"]["changedIDs"] == [] and src["lastRun"]["checks"] == 1
    assert src["nextRun"] is not None and src["stale"] is False


@pytest.mark.parametrize("host", ["1h"], indirect=True)  # no tick in between
def test_status_reports_push_failure_and_refusal(host: Host) -> None:
    before = web(host.port)
    assert before["pattern"] is None and before["lastRun"] is None
    assert before["lastRefusal"] is None and before["stale"] is False
    wait_for(lambda: web(host.port)["nextRun"] is not None, "a scheduled next run")

    ok = push(host, write_pattern(host.tmp, "ok.jsonnet", touch("make a", host.tmp / "a")))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    src = web(host.port)
    assert set(src["pattern"]) >= {"iat", "exp", "jti", "keyID"}
    assert src["pattern"]["keyID"] == "reqYEklgP4"
    assert src["pattern"]["jti"] and isinstance(src["pattern"]["iat"], int)
    assert src["lastRun"]["trigger"] == "push"
    assert src["lastRun"]["changedIDs"] == ["make a"]
    assert src["lastRun"]["failedIDs"] == [] and src["lastRun"]["err"] == ""
    assert isinstance(src["lastRun"]["durationMs"], int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", src["lastRun"]["time"])
    pushed_jti = src["pattern"]["jti"]

    refused = push(
        host,
        write_pattern(host.tmp, "bad.jsonnet", touch("make b", host.tmp / "b")),
        client_config(host.tmp, WRONG_PRIV, name="wrong.json"),
    )
    assert refused.returncode == 1
    src = web(host.port)
    assert src["lastRefusal"]["trigger"] == "push"
    assert src["lastRefusal"]["reason"]
    assert src["pattern"]["jti"] == pushed_jti  # the refused token changed nothing

    failing = write_pattern(
        host.tmp, "fail.jsonnet", "{id: 'breaks', check: 'false', change: 'exit 3'}"
    )
    assert push(host, failing).returncode == 1
    last = web(host.port)["lastRun"]
    assert last["trigger"] == "push" and last["failedIDs"] == ["breaks"] and last["err"]


def test_a_no_op_tick_logs_one_info_line(host: Host) -> None:
    pattern = write_pattern(
        host.tmp,
        "two.jsonnet",
        touch("make a", host.tmp / "a"),
        touch("make b", host.tmp / "b"),
    )
    assert push(host, pattern).returncode == 0
    summary = re.compile(r"Source web: 2 checks, no changes \[\d+(ms|(\.\d)?s)\]")
    wait_for(lambda: len(summary.findall(host.log.read_text())) >= 2, "two no-op ticks")
    lines = host.log.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if summary.search(line))
    second = next(i for i, line in enumerate(lines) if i > first and summary.search(line))
    between = [line for line in lines[first + 1 : second + 1] if "INFO" in line]
    # Passing checks ("Checked web > make a") log at DEBUG: the tick is this one line.
    assert len(between) == 1 and summary.search(between[0]), between


def test_agent_status_prints_a_table_and_json(host: Host) -> None:
    pattern = write_pattern(host.tmp, "ok.jsonnet", touch("make a", host.tmp / "a"))
    assert push(host, pattern).returncode == 0
    client = write_json(
        host.tmp / "status-client.json",
        {
            "run": {"systemMetricsKey": KEY},
            "targets": {
                "web1": {"hostname": "127.0.0.1", "port": host.port, "insecure": True},
                "other": {"hostname": "127.0.0.1", "port": free_port(), "insecure": True},
            },
        },
    )
    table = run_agent("-c", str(client), "status", "-n", "web", cwd=host.tmp)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["TARGET", "SOURCE", "KEY"]
    assert row.split()[:3] == ["web1", "web", "reqYEklgP4"]
    assert "1 changed" in row or "no changes" in row

    as_json = run_agent(
        "-c", str(client), "status", "-f", "json", "-h", f"http://127.0.0.1:{host.port}"
    )
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    (answer,) = doc.values()
    assert answer["error"] is None
    assert answer["status"]["sources"]["web"]["pattern"]["keyID"] == "reqYEklgP4"

    both = run_agent("-c", str(client), "status", cwd=host.tmp)
    assert both.returncode == 1  # "other" does not listen
    assert "other: ERROR: error performing request" in both.stdout
    assert "web1" in both.stdout


def test_agent_status_with_a_wrong_key_says_so(host: Host) -> None:
    client = write_json(host.tmp / "k.json", {"run": {"systemMetricsKey": "nope"}})
    res = run_agent("-c", str(client), "status", "-h", f"http://127.0.0.1:{host.port}")
    assert res.returncode == 1
    assert "401: the key was refused" in res.stdout


def test_agent_status_timeout_reports_a_silent_target(tmp_path: Path) -> None:
    """``--timeout`` bounds each target: a host that accepts and never answers is reported."""
    client = write_json(tmp_path / "k.json", {"run": {"systemMetricsKey": KEY}})
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        res = run_agent(
            "-c", str(client), "status", "--timeout", "1s", "-h", "http://127.0.0.1", "-p",
            str(port), cwd=tmp_path,
        )  # fmt: skip
    assert res.returncode == 1
    assert "expected an answer within 1s, got none" in res.stdout, res.stdout + res.stderr


def test_agent_status_fingerprint_needs_https_and_a_valid_value(tmp_path: Path) -> None:
    client = write_json(tmp_path / "k.json", {"run": {"systemMetricsKey": KEY}})
    pin = "sha256:" + "ab" * 32
    plain = run_agent(
        "-c", str(client), "status", "--fingerprint", pin, "-h", "http://127.0.0.1", cwd=tmp_path
    )
    assert plain.returncode == 2
    assert "--fingerprint: expected an https target to pin" in plain.stderr
    bad = run_agent(
        "-c", str(client), "status", "--fingerprint", "sha256:xyz", "-h", "127.0.0.1", cwd=tmp_path
    )
    assert bad.returncode == 2
    assert "--fingerprint:" in bad.stderr
