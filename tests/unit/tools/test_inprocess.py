"""In-process helpers (issue 14, point 1): same exit code, output and file effects as a child
``agent`` process; anything else falls back to a shell; local, test and the daemon use it."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import stat
import sys
from pathlib import Path

import pytest
from support import REPO, run_agent, write_json

from agent.config.schema import config_from_dict
from agent.daemon.service import Daemon
from agent.run import shell
from agent.run.engine import Mode, run_commands
from agent.run.model import DEFAULT_EXEC, Exec, parse_commands
from agent.tools.inprocess import HelperRunner, helper_runner

#: The child ``agent`` used for the reference results.
AGENT = [sys.executable, "-m", "agent"]
CHILD_ENV = {"PYTHONPATH": str(REPO)}


def snapshot(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """Every entry under ``root``: kind, mode and contents (or link target)."""
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", 0, os.readlink(path).replace(str(root), "D"))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode), b"")
        else:
            out[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return out


def child(argv: list[str], env: dict[str, str], stdin: str) -> shell.ShellResult:
    script = shlex.join([*AGENT, *argv])
    return asyncio.run(shell.run(DEFAULT_EXEC, script, env={**CHILD_ENV, **env}, stdin=stdin))


#: (argv with {d} for the work directory, stdin, env) steps, run in order on one tree.
Step = tuple[list[str], str, dict[str, str]]
DIFF = {"ETCHA_DIFF": "1"}
SEQUENCES: dict[str, list[Step]] = {
    "file": [
        (["file", "check", "--", "{d}/f", "-"], "hello\n", {}),
        (["file", "check", "--", "{d}/f", "-"], "hello\n", DIFF),
        (["file", "change", "-p", "0640", "--", "{d}/f", "-"], "hello\n", DIFF),
        (["file", "check", "-p", "0640", "--", "{d}/f", "-"], "hello\n", {}),
        (["file", "check", "--", "{d}/f", "-"], "other\n", DIFF),
        (["file", "change", "--", "{d}/f", "inline"], "", {}),
        (["file", "remove", "--", "{d}/f", "-"], "not the contents", {}),
        (["file", "change", "--", "{d}/missing/f", "x"], "", {}),
        (["file", "remove", "--", "{d}/f", ""], "", {}),
        (["file", "remove", "--", "{d}/f"], "", {}),
    ],
    "dir": [
        (["dir", "check", "--", "{d}/sub"], "", {}),
        (["dir", "change", "-p", "0700", "--", "{d}/sub/deeper"], "", {}),
        (["dir", "check", "-p", "0755", "--", "{d}/sub/deeper"], "", {}),
        (["dir", "remove", "--", "{d}/sub"], "", {}),
        (["dir", "remove", "--", "{d}/sub/deeper"], "", {}),
        (["dir", "change", "-o", "no-such-user-i14", "--", "{d}/x"], "", {}),
    ],
    "copy": [
        (["file", "change", "-p", "0600", "--", "{d}/src", "secret\n"], "", {}),
        (["copy", "check", "--", "{d}/src", "{d}/dst"], "", DIFF),
        (["copy", "change", "--", "{d}/src", "{d}/dst"], "", DIFF),
        (["copy", "check", "--", "{d}/src", "{d}/dst"], "", {}),
        (["copy", "change", "--", "{d}/src", "-"], "", {}),
        (["copy", "check", "--", "{d}/src", "-"], "", {}),
        (["copy", "change", "--", "{d}/nope", "{d}/dst2"], "", {}),
        (["copy", "remove", "--", "{d}/src", "{d}/dst"], "", {}),
    ],
    "line": [
        (["line", "check", "--", "{d}/conf", "^a=", "a=1"], "", DIFF),
        (["line", "change", "--", "{d}/conf", "^a=", "a=1"], "", DIFF),
        (["line", "change", "--", "{d}/conf", "^b=.*", "b=2"], "", DIFF),
        (["line", "check", "--", "{d}/conf", "^a=.*", "a=3"], "", DIFF),
        (["line", "remove", "--", "{d}/conf", "^b=.*", "b=2"], "", {}),
        (["line", "change", "--", "-", "^x=(.*)", "y=${1}"], "x=7\nz\n", {}),
        (["line", "check", "--", "-", "^x", "x"], "y\n", {}),
        (["line", "change", "--", "{d}/conf", "(", "x"], "", {}),
    ],
    "link": [
        (["link", "check", "--", "{d}/target", "{d}/ln"], "", {}),
        (["link", "change", "--", "{d}/target", "{d}/ln"], "", {}),
        (["link", "check", "--", "{d}/target", "{d}/ln"], "", {}),
        (["link", "remove", "--", "{d}/other", "{d}/ln"], "", {}),
        (["link", "remove", "--", "{d}/target", "{d}/ln"], "", {}),
    ],
}


@pytest.mark.parametrize("verb", sorted(SEQUENCES))
def test_in_process_equals_the_child_process(verb: str, tmp_path: Path) -> None:
    spawned, inproc = tmp_path / "spawned", tmp_path / "inproc"
    spawned.mkdir()
    inproc.mkdir()
    runner = HelperRunner()
    for argv, stdin, env in SEQUENCES[verb]:
        want = child([a.replace("{d}", str(spawned)) for a in argv], env, stdin)
        full_env = shell.process_env(DEFAULT_EXEC, env)
        got = runner.try_run([a.replace("{d}", str(inproc)) for a in argv], full_env, stdin)
        assert got is not None, argv
        step = " ".join(argv)
        assert got.exit_code == want.exit_code, (step, want.output, got.output)
        assert got.output.replace(str(inproc), "D") == want.output.replace(str(spawned), "D"), step
        assert snapshot(inproc) == snapshot(spawned), step
    assert runner.ran == len(SEQUENCES[verb])


@pytest.mark.parametrize(
    "argv",
    [
        ["file", "-h"],
        ["file", "bogus-mode", "/a"],
        ["file"],
        ["copy", "change", "http://127.0.0.1:9/x", "/tmp/never"],
        ["dir", "check", "/a", "extra"],
    ],
)
def test_unparsable_words_and_url_copies_are_declined(argv: list[str]) -> None:
    runner = HelperRunner()
    assert runner.try_run(argv, {}, "") is None
    assert runner.ran == 0


def _run(script: str, runner: HelperRunner, ex: Exec = DEFAULT_EXEC, stdin: str = "") -> bool:
    """Run one check through the engine; True when it passed."""
    spec = {"id": "c", "check": script, "change": "true"}
    if stdin:
        spec["stdin"] = stdin
    cmds = parse_commands([spec], where="test")
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    ex = ex.override(Exec(env={"PATH": path, "PYTHONPATH": str(REPO)}))
    outcome = asyncio.run(
        run_commands(cmds, exec=ex, mode=Mode.CHANGE, check_only=True, inprocess=runner)
    )
    assert outcome.error is None
    return not outcome.outputs[0].check_fail_change


def test_the_engine_runs_a_lone_helper_in_process(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    os.chmod(tmp_path / "f", 0o644)
    runner = HelperRunner()
    assert _run(f"agent file check -- '{tmp_path}/f' -", runner, stdin="x")
    assert not _run(f"agent file check -- '{tmp_path}/f' -", runner, stdin="y")
    assert runner.ran == 2


@pytest.mark.parametrize(
    "template",
    [
        "agent file check -- '{f}' | cat",
        "agent file check -- '{f}' && true",
        "F='{f}'; agent file check -- \"$F\"",
        "agent file check -- '{f}' 2>/dev/null",
        "agent file check -- $(echo '{f}')",
    ],
)
def test_scripts_with_shell_syntax_run_in_a_shell(template: str, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    os.chmod(tmp_path / "f", 0o644)
    runner = HelperRunner()
    assert _run(template.format(f=tmp_path / "f"), runner)
    assert not _run(template.format(f=tmp_path / "missing"), runner)
    assert runner.ran == 0


def test_an_exec_user_runs_the_helper_in_a_child(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    os.chmod(tmp_path / "f", 0o644)
    runner = HelperRunner()
    ex = DEFAULT_EXEC.override(Exec(user=str(os.geteuid())))
    assert _run(f"agent file check -- '{tmp_path}/f'", runner, ex)
    assert runner.ran == 0


def _pattern(tmp_path: Path, n: int) -> Path:
    files = ", ".join(
        f"e.file(path='{tmp_path}/f{i}', contents='c{i}\\n', agentBin='agent')" for i in range(n)
    )
    path = tmp_path / "p.jsonnet"
    path.write_text(f"local e = import 'etcha/etcha.libsonnet';\n{{run: [{files}]}}\n")
    return path


@pytest.mark.parametrize("enabled", [True, False])
def test_local_runs_library_file_checks_in_process_unless_switched_off(
    enabled: bool, tmp_path: Path
) -> None:
    config = write_json(tmp_path / "c.json", {"run": {"inProcessHelpers": enabled}})
    pattern = _pattern(tmp_path, 20)
    first = run_agent("-c", str(config), "-l", "debug", "local", str(pattern), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Changed 20" in first.stdout
    again = run_agent("-c", str(config), "-l", "debug", "local", str(pattern), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Changed" not in again.stdout
    ran_in_process = again.stderr.count("in-process: exit 0")
    assert ran_in_process == (20 if enabled else 0)
    assert (tmp_path / "f7").read_text() == "c7\n"


def test_agent_test_runs_library_helpers_in_process(tmp_path: Path) -> None:
    pattern = _pattern(tmp_path, 3)
    res = run_agent("-l", "debug", "test", str(pattern), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stderr.count("in-process") >= 3 * 5


def test_the_daemon_runs_helper_commands_in_process(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"f{i}").write_text("")
        os.chmod(tmp_path / f"f{i}", 0o644)
    cmds = [{"id": f"f{i}", "check": f"agent file check -- '{tmp_path}/f{i}'"} for i in range(20)]
    doc = {
        "run": {"stateDir": str(tmp_path / "state")},
        "sources": {"s": {"commands": cmds, "noRestore": True}},
    }
    config = write_json(tmp_path / "c.json", doc)
    res = run_agent("-c", str(config), "-l", "debug", "run", "-o", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("Ran file check in-process: exit 0") == 20, res.stderr[-2000:]
    assert json.dumps(doc)  # the config was a real JSON document


def test_the_daemon_builds_one_helper_hook_per_config_not_one_per_run(tmp_path: Path) -> None:
    cfg = config_from_dict({"run": {"stateDir": str(tmp_path / "state")}})
    fresh = config_from_dict({"run": {"stateDir": str(tmp_path / "state"), "inProcessEtcha": True}})
    service = Daemon(cfg)
    service.runner.inprocess = helper_runner
    first = service.runner._inprocess_hook()
    assert first is not None and service.runner._inprocess_hook() is first
    asyncio.run(service.reload(fresh))
    again = service.runner._inprocess_hook()
    assert again is not first and again is not None and again.etcha
