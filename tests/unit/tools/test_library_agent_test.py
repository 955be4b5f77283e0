"""Every standard-library function passes `agent test` in a sandbox directory.

A project is scaffolded with `agent init` into ``tmp_path``; one pattern per library function
points all its paths inside the sandbox; `agent test` (a real subprocess) runs change, check,
remove and check on them. Helpers run ``python -m agent`` through ``vars.agentBin``. The tests
pass ``--in-place`` (their paths already are temporary) so that they can look at the sandbox.

Tests that change the host outside the temp directory (users, groups, packages, units) run only
with ``AGENT_TEST_SYSTEM=1`` (``.ci/run`` sets it; a developer's ``make test`` does not), as root:

- ``apt``: installs and removes a real package, so it also needs ``AGENT_TEST_NETWORK=1`` (the
  Debian mirror).
- ``aptKey``'s ``apt-get update`` step is never run: the key and list files are tested, and the
  update step is swapped for a marker file to prove that it is triggered.
- ``systemdUnit``: also needs systemd as PID 1 (it enables and starts a real unit).
- ``user``/``group``: useradd/groupadd.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import run_agent

IS_ROOT = os.geteuid() == 0
#: Tests may create users and groups, install packages and start units (CI only).
SYSTEM = os.environ.get("AGENT_TEST_SYSTEM") == "1" and IS_ROOT
SYSTEM_REASON = "changes the host: set AGENT_TEST_SYSTEM=1 and run as root"
HAS_SHADOW = all(shutil.which(t) for t in ("useradd", "userdel", "groupadd", "groupdel"))
PID1 = Path("/proc/1/comm").read_text().strip() if Path("/proc/1/comm").exists() else ""

KEY = """-----BEGIN PGP PUBLIC KEY BLOCK-----

mDMEZkAAABYJKwYBBAHaRw8BAQdAagentTestKeyNotARealKeyButArmoredText
=abcd
-----END PGP PUBLIC KEY BLOCK-----
"""


def q(value: str | Path) -> str:
    """A Jsonnet string literal."""
    return json.dumps(str(value))


def project(tmp_path: Path) -> tuple[Path, Path]:
    """Scaffold a project with `agent init`; return (project dir, sandbox dir)."""
    proj = tmp_path / "proj"
    res = run_agent("init", str(proj), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (proj / "patterns" / "motd.jsonnet").unlink()  # the sample manages /etc/motd: not in place
    (proj / "agent.jsonnet").write_text(
        json.dumps({"vars": {"agentBin": f"{sys.executable} -m agent"}})
    )
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    return proj, sandbox


def pattern(proj: Path, name: str, run: str) -> None:
    (proj / "patterns" / f"{name}.jsonnet").write_text(
        "local etcha = import '../lib/etcha/etcha.libsonnet';\n\n{\n  run: " + run + ",\n}\n"
    )


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    """A unique user and group name; removed afterwards if a test left them behind."""
    suffix = secrets.token_hex(3)
    user, group = f"agtu{suffix}", f"agtg{suffix}"
    yield user, group
    if SYSTEM and HAS_SHADOW:
        subprocess.run(["userdel", user], capture_output=True, check=False)
        subprocess.run(["groupdel", group], capture_output=True, check=False)


def _exists(fn: object, name: str) -> bool:
    try:
        fn(name)  # type: ignore[operator]
    except KeyError:
        return False
    return True


def test_every_library_function_passes_agent_test(tmp_path: Path, names: tuple[str, str]) -> None:
    proj, s = project(tmp_path)
    (s / "src.txt").write_text("copied\n")
    (s / "target").write_text("link target\n")
    (s / "lines.conf").write_text("other=1\n")
    expected_patterns = 0

    def add(name: str, run: str) -> None:
        nonlocal expected_patterns
        pattern(proj, name, run)
        expected_patterns += 1

    add("dir", f"[etcha.dir(path={q(s / 'd')}, mode='0750')]")
    add(
        "file",
        f"[etcha.file(path={q(s / 'f.txt')}, contents='hello\\n', mode='0600'),"
        f" etcha.file(path={q(s / 'any.txt')})]",
    )
    add("copy", f"[etcha.copy(src={q(s / 'src.txt')}, dst={q(s / 'copy.txt')})]")
    add(
        "line",
        f"[etcha.line(path={q(s / 'lines.conf')}, match='^key=.*$', replacement='key=value')]",
    )
    add("symlink", f"[etcha.symlink(src={q(s / 'target')}, dst={q(s / 'link')})]")
    add(
        "aptKey",
        "[c + (if std.endsWith(c.id, ' update') then "
        f"{{change: 'touch ' + {q(s / 'apt-updated')}}} else {{}}) for c in "
        f"etcha.aptKey(name='agenttest', key={q(KEY)},"
        " repo='http://127.0.0.1:9/debian stable main',"
        f" dir={q(s / 'keyrings')}, listDir={q(s / 'sources')})]",
    )
    user, group = names
    shadow = SYSTEM and HAS_SHADOW  # user and group only with AGENT_TEST_SYSTEM=1
    if shadow:
        add("group", f"[etcha.group(name={q(group)})]")
        add(
            "user",
            f"[etcha.group(name={q(group)}, id='user group'),"
            f" etcha.user(name={q(user)}, home={q(s / 'home')}, shell='/usr/sbin/nologin',"
            f" comment='agent test', groups=[{q(group)}])]",
        )

    res = run_agent("test", "--in-place", "patterns", cwd=proj)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"in {expected_patterns} patterns: no failures" in res.stdout

    # The remove phase cleaned the sandbox up, and the triggered apt update ran.
    left = sorted(p.name for p in s.iterdir())
    assert left == ["apt-updated", "keyrings", "lines.conf", "sources", "src.txt", "target"]
    assert not list((s / "keyrings").iterdir()) and not list((s / "sources").iterdir())
    assert (s / "lines.conf").read_text() == "other=1\n"
    if shadow:
        assert not _exists(pwd.getpwnam, user)
        assert not _exists(grp.getgrnam, group)


def test_broken_pattern_is_listed_by_file_and_id(tmp_path: Path) -> None:
    proj, s = project(tmp_path)
    target = s / "broken.txt"
    pattern(proj, "good", f"[etcha.file(path={q(s / 'good.txt')}, contents='ok\\n')]")
    # The change does not create the file, so the check still fails after it.
    pattern(proj, "broken", f"[etcha.file(path={q(target)}, contents='x\\n') + {{change: 'true'}}]")
    res = run_agent("test", "--in-place", "patterns", cwd=proj)
    assert res.returncode == 1
    assert f"patterns/broken.jsonnet:file {target}:\n    check still failed after change\n" in (
        res.stdout
    )
    assert "good.jsonnet" not in res.stdout
    assert "test failure" in res.stderr


@pytest.mark.skipif(not SYSTEM, reason=f"useradd {SYSTEM_REASON}")
@pytest.mark.skipif(not HAS_SHADOW, reason="useradd/userdel are not installed")
def test_user_change_that_ignores_the_shell_is_reported(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    proj, _sandbox = project(tmp_path)
    user, _ = names
    # A user whose change ignores the requested shell: the check never passes.
    pattern(
        proj,
        "user",
        f"[etcha.user(name={q(user)}, shell='/bin/false') + {{change: 'useradd -M {user}'}}]",
    )
    res = run_agent("test", "--in-place", "patterns", cwd=proj)
    assert res.returncode == 1
    assert f"patterns/user.jsonnet:user {user}:" in res.stdout


@pytest.mark.skipif(not SYSTEM, reason=f"apt installs a real package, so it {SYSTEM_REASON}")
@pytest.mark.skipif(
    os.environ.get("AGENT_TEST_NETWORK") != "1" or shutil.which("apt-get") is None,
    reason="apt needs apt-get and a package mirror: set AGENT_TEST_NETWORK=1"
    " (CI sets it with AGENT_TEST_SYSTEM=1)",
)
def test_apt_passes_agent_test(tmp_path: Path) -> None:
    proj, _ = project(tmp_path)
    subprocess.run(["apt-get", "remove", "-y", "-qq", "sl"], capture_output=True, check=False)
    pattern(proj, "apt", "[etcha.apt(packages='sl', update=true, purge=true)]")
    res = run_agent("test", "--in-place", "patterns", cwd=proj)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no failures" in res.stdout
    probe = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "sl"], capture_output=True)
    assert b"install ok installed" not in probe.stdout  # the remove phase took it away again


@pytest.mark.skipif(not SYSTEM, reason=f"systemdUnit starts a real unit, so it {SYSTEM_REASON}")
@pytest.mark.skipif(
    PID1 != "systemd", reason=f"systemdUnit needs systemd as PID 1 (PID 1 is {PID1 or 'unknown'})"
)
def test_systemd_unit_passes_agent_test(tmp_path: Path) -> None:
    proj, _ = project(tmp_path)
    unit = f"agent-test-{secrets.token_hex(3)}.service"
    contents = "[Unit]\nDescription=agent test\n[Service]\nType=oneshot\nRemainAfterExit=yes\n"
    contents += "ExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
    pattern(proj, "unit", f"etcha.systemdUnit(name={q(unit)}, contents={q(contents)})")
    try:
        res = run_agent("test", "--in-place", "patterns", cwd=proj)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        subprocess.run(["systemctl", "stop", unit], capture_output=True, check=False)
        subprocess.run(["systemctl", "disable", unit], capture_output=True, check=False)
        Path("/etc/systemd/system", unit).unlink(missing_ok=True)
