"""`agent test` is safe by default (``vars.root``) and the helpers find the agent (``agentBin``).

Issue 15, points 6 and 7. Every path a pattern names lives under ``tmp_path``: the "real" paths
are temporary too, so the tests never touch the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import RIGHT_PRIV, RIGHT_PUB, run_agent, write_json

from agent.run import selfexec
from agent.run.model import Exec
from agent.run.shell import process_env
from agent.tools.testmode import ROOT_WARNING, root_warning

IS_ROOT = os.geteuid() == 0
#: The agent's console script in the interpreter's bin directory (``make install`` puts it there).
AGENT_SCRIPT = Path(sys.executable).parent / "agent"
#: A PATH without the venv: no ``agent`` on it.
BARE_PATH = "/usr/bin:/bin"


def q(value: str | Path) -> str:
    return json.dumps(str(value))


def pattern_file(where: Path, run: str) -> Path:
    where.write_text("local etcha = import 'etcha/etcha.libsonnet';\n{ run: " + run + " }\n")
    return where


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A TMPDIR for the agent, so the tests can see that the temporary roots are removed."""
    path = tmp_path / "tmpdir"
    path.mkdir()
    return path


def file_and_line(real: Path) -> str:
    """A pattern: a new file two levels down, and a line in an existing file."""
    return (
        f"[etcha.file(path={q(real / 'etc' / 'app' / 'new.conf')}, contents='x\\n'),"
        f" etcha.line(path={q(real / 'existing.conf')}, match='^k=.*$', replacement='k=v')]"
    )


def test_agent_test_leaves_absolute_library_paths_untouched(tmp_path: Path, scratch: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    existing = real / "existing.conf"
    existing.write_text("other=1\n")
    os.utime(existing, ns=(1_000_000_000, 1_000_000_000))
    pattern = pattern_file(tmp_path / "p.jsonnet", file_and_line(real))
    res = run_agent("test", str(pattern), cwd=tmp_path, env={"TMPDIR": str(scratch)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Tested 2 commands in 1 pattern: no failures" in res.stdout
    assert not (real / "etc").exists()
    assert existing.read_text() == "other=1\n"
    assert existing.stat().st_mtime_ns == 1_000_000_000
    assert list(scratch.iterdir()) == []  # the temporary root is gone


def test_agent_test_in_place_uses_the_real_paths(tmp_path: Path, scratch: Path) -> None:
    real = tmp_path / "real"
    (real / "etc" / "app").mkdir(parents=True)  # in place, parents are not created
    existing = real / "existing.conf"
    existing.write_text("other=1\n")
    os.utime(existing, ns=(1_000_000_000, 1_000_000_000))
    pattern = pattern_file(tmp_path / "p.jsonnet", file_and_line(real))
    res = run_agent("test", "--in-place", str(pattern), cwd=tmp_path, env={"TMPDIR": str(scratch)})
    assert res.returncode == 0, res.stdout + res.stderr
    # change wrote the line and remove took it out again: the file was touched
    assert existing.stat().st_mtime_ns != 1_000_000_000
    assert existing.read_text() == "other=1\n"
    assert list((real / "etc" / "app").iterdir()) == []  # created, then removed
    assert "WARNING" not in res.stderr


def test_library_paths_render_under_vars_root_and_unchanged_without_it(tmp_path: Path) -> None:
    pattern = pattern_file(
        tmp_path / "p.jsonnet",
        "[etcha.file(path='/etc/motd', contents='x'), etcha.copy(src='/s', dst='/d/e'),"
        " etcha.symlink(src='/t', dst='/l'), etcha.dir(path='/dd'), etcha.file(path='rel')]",
    )
    host = json.loads(run_agent("render", str(pattern), cwd=tmp_path).stdout)["run"]
    assert host[0]["id"] == "file /etc/motd"
    assert "mkdir" not in host[0]["change"] and " -- '/etc/motd' -" in host[0]["change"]
    cfg = write_json(tmp_path / "c.json", {"vars": {"root": "/r/"}})
    res = run_agent("-c", str(cfg), "render", str(pattern), cwd=tmp_path)
    rooted = json.loads(res.stdout)["run"]
    assert [c["id"] for c in rooted] == [c["id"] for c in host]
    assert rooted[0]["change"].startswith("mkdir -p -- '/r/etc' && ")
    assert rooted[0]["check"].endswith(" -- '/r/etc/motd' -")
    assert rooted[1]["check"].endswith(" -- '/s' '/r/d/e'")  # the source is read as given
    assert rooted[2]["check"].endswith(" -- '/t' '/r/l'")  # the link target is written as given
    assert rooted[3]["check"].endswith(" -- '/r/dd'")
    assert rooted[4]["check"].endswith(" -- 'rel'")  # relative paths stay relative


@pytest.mark.skipif(not IS_ROOT, reason="the warning is for root")
def test_agent_test_as_root_warns_once_unless_in_place(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    for name in ("a", "b"):
        pattern_file(
            tmp_path / "p" / f"{name}.jsonnet",
            f"[etcha.file(path={q(tmp_path / name)}, contents='x')]",
        )
    res = run_agent("test", "p", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stderr.count("WARNING: ") == 1
    assert ROOT_WARNING in res.stderr
    in_place = run_agent("test", "--in-place", "p", cwd=tmp_path)
    assert in_place.returncode == 0, in_place.stdout + in_place.stderr
    assert "WARNING" not in in_place.stderr


def test_root_warning_only_for_root_without_in_place() -> None:
    assert root_warning(in_place=False, euid=0) == ROOT_WARNING
    assert root_warning(in_place=True, euid=0) is None
    assert root_warning(in_place=False, euid=1000) is None


def test_agent_test_help_says_other_commands_run_for_real() -> None:
    res = run_agent("test", "--help")
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    assert "--in-place" in text
    assert "Commands outside those functions that touch absolute paths still run for real" in text


# --------------------------------------------------------------------------- point 7: agentBin


def test_agent_command_is_the_console_script_or_the_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "argv", [str(AGENT_SCRIPT), "run"])
    assert selfexec.agent_command() == str(AGENT_SCRIPT)
    assert selfexec.agent_dir() == str(AGENT_SCRIPT.parent)
    main = Path(selfexec.__file__).resolve().parent.parent / "__main__.py"
    monkeypatch.setattr(sys, "argv", [str(main)])
    assert selfexec.agent_command() == f"{sys.executable} -m agent"
    assert selfexec.agent_dir() == os.path.dirname(sys.executable)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    assert selfexec.agent_command() == "agent"
    assert selfexec.agent_dir() is None


def test_process_env_puts_the_agent_directory_first_on_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "argv", [str(AGENT_SCRIPT)])
    ex = Exec(env={"PATH": BARE_PATH}, env_inherit=False)
    assert process_env(ex)["PATH"] == f"{AGENT_SCRIPT.parent}:{BARE_PATH}"
    assert process_env(ex, extra_path=None)["PATH"] == BARE_PATH
    assert process_env(ex, extra_path="/x")["PATH"] == f"/x:{BARE_PATH}"
    first = Exec(env={"PATH": f"{AGENT_SCRIPT.parent}:{BARE_PATH}"}, env_inherit=False)
    assert process_env(first)["PATH"] == f"{AGENT_SCRIPT.parent}:{BARE_PATH}"  # not twice


@pytest.fixture
def bare_env(tmp_path: Path) -> dict[str, str]:
    if not AGENT_SCRIPT.is_file():
        pytest.skip("no agent console script next to the interpreter")
    if shutil.which("agent", path=BARE_PATH):
        pytest.skip(f"an agent is on {BARE_PATH}")
    return {"PATH": BARE_PATH, "HOME": str(tmp_path)}


def test_local_by_absolute_path_without_agent_on_path_runs_the_library(
    tmp_path: Path, bare_env: dict[str, str]
) -> None:
    target = tmp_path / "motd"
    pattern = pattern_file(
        tmp_path / "p.jsonnet", f"[etcha.file(path={q(target)}, contents='hi\\n')]"
    )
    direct = subprocess.run(
        [str(AGENT_SCRIPT), "local", str(pattern)],
        cwd=tmp_path,
        env=bare_env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert direct.returncode == 0, direct.stderr
    assert target.read_text() == "hi\n"


def test_daemon_by_absolute_path_without_agent_on_path_runs_the_library(
    tmp_path: Path, bare_env: dict[str, str]
) -> None:
    target = tmp_path / "motd"
    pattern = pattern_file(
        tmp_path / "p.jsonnet", f"[etcha.file(path={q(target)}, contents='d\\n')]"
    )
    client = write_json(tmp_path / "client.json", {"build": {"signingKey": RIGHT_PRIV}})
    built = run_agent("-c", str(client), "build", str(pattern), str(tmp_path / "p.jwt"))
    assert built.returncode == 0, built.stderr
    host = write_json(
        tmp_path / "host.json",
        {
            "run": {"stateDir": str(tmp_path / "state"), "verifyKeys": [RIGHT_PUB]},
            "sources": {"web": {"pullPaths": [str(tmp_path / "p.jwt")]}},
        },
    )
    res = subprocess.run(
        [str(AGENT_SCRIPT), "-c", str(host), "run", "-o"],
        cwd=tmp_path,
        env=bare_env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "command not found" not in res.stderr
    assert target.read_text() == "d\n"
