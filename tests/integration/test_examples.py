"""Every example under examples/ (except vault-transit, docs only) and `make demo` run for real.

Each run script is a real subprocess in its own temporary work dir, with its own daemon on a
free 127.0.0.1 port; the test checks its exit code, the lines it promises, and that nothing it
started is still running afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

pytestmark = pytest.mark.integration

EXAMPLES = REPO / "examples"
needs_tools = pytest.mark.skipif(
    not (shutil.which("openssl") and shutil.which("curl")),
    reason="openssl and curl are needed (.ci/run installs them)",
)


def run_script(script: Path, work: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "ETCHA_"))}
    return subprocess.run(
        [sys.executable, str(script), str(work)],
        capture_output=True,
        text=True,
        env=env,
        timeout=100,
        check=False,
    )


def processes_under(path: Path) -> list[str]:
    """Processes whose working directory is inside ``path`` (a leftover daemon or server)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd == str(path) or cwd.startswith(str(path) + "/"):
            found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()!r}")
    return found


def check(script: Path, tmp_path: Path, *expected: str) -> str:
    work = tmp_path / "work"
    res = run_script(script, work)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    for line in expected:
        assert line in out, f"{line!r} missing from:\n{out}"
    assert out.rstrip().endswith("Done.")
    assert processes_under(work) == []
    return out


def test_every_example_has_readme_config_and_patterns() -> None:
    names = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert names == [
        "events-webhooks",
        "openssl-signing",
        "pull-file",
        "pull-http",
        "push",
        "vault-transit",
    ]
    for name in names:
        d = EXAMPLES / name
        assert (d / "README.md").is_file(), name
        assert (d / "agent.jsonnet").is_file(), name
        if name != "vault-transit":
            assert (d / "run.py").is_file(), name
            assert list((d / "patterns").glob("*.jsonnet")), name


@needs_tools
def test_push_example_changes_then_no_changes_then_removes(tmp_path: Path) -> None:
    out = check(
        EXAMPLES / "push" / "run.py",
        tmp_path,
        "Changed 2: dir out/app, file out/app/motd",
        "No changes",
        "Changed 1: file out/issue",
        "Removed 2: file out/app/motd, dir out/app",
        "Would change 1: file out/issue",
        "hello from",
    )
    assert out.count("web1:") >= 5
    assert (tmp_path / "work" / "out" / "issue").read_text() == "agent example host\n"
    assert oct((tmp_path / "work" / "state" / "web.jwt").stat().st_mode & 0o777) == "0o600"


def test_pull_file_example_applies_new_builds_and_corrects_drift(tmp_path: Path) -> None:
    check(
        EXAMPLES / "pull-file" / "run.py",
        tmp_path,
        "Changed core > file out/etc/app.conf",
        "Removed core > file out/etc/app.conf",
        "Changed core > file out/etc/app2.conf",
        "$ agent -c agent.jsonnet run -o",
    )
    etc = tmp_path / "work" / "out" / "etc"
    assert sorted(p.name for p in etc.iterdir()) == ["app2.conf"]


def test_pull_http_example_gets_304_until_the_file_changes(tmp_path: Path) -> None:
    out = check(
        EXAMPLES / "pull-http" / "run.py",
        tmp_path,
        "server.log: GET /core.jwt -> 200",
        "server.log: GET /core.jwt -> 304",
        "out/site.conf  ->  version = 1",
        "out/site.conf  ->  version = 2",
    )
    log = (tmp_path / "work" / "server.log").read_text().splitlines()
    gets = [line for line in log if line.startswith("GET")]
    # exactly two downloads (v1, v2); every other pull was a 304
    assert gets.count("GET /core.jwt -> 200") == 2, gets
    assert gets.count("GET /core.jwt -> 304") >= 3, gets
    assert "version = 2" in out


@needs_tools
def test_events_webhooks_example_event_webhook_and_metrics(tmp_path: Path) -> None:
    out = check(
        EXAMPLES / "events-webhooks" / "run.py",
        tmp_path,
        "Changed 1: release",
        "trigger=event event=deploy output=release 42 key=example",
        "HTTP/1.1 200",
        "Content-Type: text/plain",
        "body=some data",
        "trigger=webhook",
        'etcha_sources_total{error="0",name="handler"',
        "401",
    )
    assert "404" in out


@needs_tools
def test_openssl_signing_example_signs_verifies_and_refuses_other_key(tmp_path: Path) -> None:
    check(
        EXAMPLES / "openssl-signing" / "run.py",
        tmp_path,
        "Always changed signingCommands > openssl sign",
        "Changed 1: hello file",
        "No changes",
        "ERROR: push didn't match any sources",
        "refused: token did not verify",
        "agent jwt other.jwt: exit 1",
    )


@needs_tools
def test_make_demo_runs_the_whole_tour_and_stops_cleanly(tmp_path: Path) -> None:
    out = check(
        EXAMPLES / "demo.py",
        tmp_path,
        "Changed 2: dir out/app, file out/app/motd",
        "No changes",
        "Removed 2: file out/app/motd, dir out/app",
        "Changed core > file out/core/pulled.txt",
        "trigger=event event=deploy",
        "body=some data",
        "etcha_sources_total{",
        "INFO  Stopped",
        "exit code 0",
        "nothing is left running",
    )
    steps = [line for line in out.splitlines() if re.match(r"\d+\. ", line)]
    assert [s.split(".")[0] for s in steps] == [str(n) for n in range(1, len(steps) + 1)]
    assert len(steps) >= 12


@needs_tools
def test_example_failure_is_reported_and_daemon_is_stopped(tmp_path: Path) -> None:
    # A file where the state directory should be: the daemon refuses to start (it could not
    # keep what it accepts); the script must say so, exit 1, and leave no daemon behind.
    work = tmp_path / "work"
    work.mkdir()
    (work / "state").write_text("not a directory")
    res = run_script(EXAMPLES / "push" / "run.py", work)
    assert res.returncode == 1
    assert "--- daemon.log ---" in res.stderr  # the daemon log is shown on failure
    assert "run.stateDir" in res.stderr and "is not a directory" in res.stderr
    assert processes_under(work) == []
