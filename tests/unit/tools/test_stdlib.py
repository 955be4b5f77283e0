"""Behaviour of the Jsonnet standard library in agent/lib/etcha (what `agent init` writes).

Each library function is rendered with :func:`agent.jsonnet.engine.evaluate_text`; the commands
are checked for shape, linted with shellcheck, and (where this host allows) run for real through
the same phases as `agent test`: check fails, change, check passes, change again, remove, check
fails.

Every remove path also has a test showing what it refuses to delete: real files in a temp
directory, the real remove run by dropping the command from a pattern (the engine's diff-run, as
a push or pull of a new pattern does) or by running its remove script, then the data is checked.

Tests that create users or groups, install packages or start units change the host: they run only
with ``AGENT_TEST_SYSTEM=1`` (``.ci/run`` sets it), as root.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import REPO

from agent.core.errors import RenderError
from agent.jsonnet.engine import evaluate_text
from agent.run.engine import RunOutcome, diff_run
from agent.run.model import DEFAULT_EXEC, parse_commands

LIB = REPO / "agent" / "lib" / "etcha"
AGENT_BIN = shlex.join([sys.executable, "-m", "agent"])
SHELLCHECK = shutil.which("shellcheck")
NO_SYSTEMD = Path("/proc/1/comm").read_text().strip() != "systemd"


def import_from_lib(base: str, rel: str) -> tuple[str, bytes]:
    path = Path(rel) if rel.startswith("/") else Path(base) / rel
    if not path.is_file():
        path = LIB / rel
    path = path.resolve()
    if not path.is_file():
        raise RuntimeError(f"couldn't find import {rel} from {base}")
    return str(path), path.read_bytes()


def natives(config: Any) -> dict[str, tuple[tuple[str, ...], Callable[..., Any]]]:
    return {
        "getArch": ((), lambda: "amd64"),
        "getConfig": ((), lambda: config),
        "getEnv": (("key", "fallback"), lambda key, fallback: f"env:{key}:{fallback}"),
        "getFile": (("path", "fallback"), lambda path, fallback: f"file:{path}:{fallback}"),
        "getOS": ((), lambda: "linux"),
        "getPath": ((), lambda: "/patterns"),
        "getRecord": (
            ("type", "name", "fallback"),
            lambda type, name, fallback: [f"{type}:{name}:{fallback}"],
        ),
        "randStr": (("length",), lambda length: "r" * int(length)),
        "regexMatch": (("regex", "string"), lambda regex, string: regex in string),
        "render": (("string",), lambda string: {"rendered": string}),
    }


def render(expr: str, *, config: Any = None) -> Any:
    cfg = {"vars": {"agentBin": AGENT_BIN}} if config is None else config
    text = f"local etcha = import 'etcha.libsonnet';\n{expr}"
    return evaluate_text(
        text,
        str(LIB / "test.jsonnet"),
        import_callback=import_from_lib,
        native_callbacks=natives(cfg),
    )


def q(value: str | Path) -> str:
    """Jsonnet string literal."""
    import json

    return json.dumps(str(value))


def flatten(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return [c for item in value for c in flatten(item)]
    if "commands" in value:
        return flatten(value["commands"])
    return [value]


def sh(script: str, stdin: str | None, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["/usr/bin/bash", "-e", "-o", "pipefail", "-c", script],
        input=(stdin or "").encode(),
        cwd=cwd,
        capture_output=True,
        timeout=60,
        check=False,
    )


def assert_idempotent(cmd: dict[str, Any], cwd: Path) -> None:
    """The `agent test` phases on one command, run for real."""
    stdin = cmd.get("stdin")
    r = sh(cmd["check"], stdin, cwd)
    assert r.returncode != 0, f"{cmd['id']}: check passed before change"
    r = sh(cmd["change"], stdin, cwd)
    assert r.returncode == 0, f"{cmd['id']}: change failed: {r.stderr!r}"
    r = sh(cmd["check"], stdin, cwd)
    assert r.returncode == 0, f"{cmd['id']}: check failed after change: {r.stderr!r}"
    r = sh(cmd["change"], stdin, cwd)
    assert r.returncode == 0, f"{cmd['id']}: second change failed: {r.stderr!r}"
    r = sh(cmd["remove"], stdin, cwd)
    assert r.returncode == 0, f"{cmd['id']}: remove failed: {r.stderr!r}"
    r = sh(cmd["check"], stdin, cwd)
    assert r.returncode != 0, f"{cmd['id']}: check passed after remove"
    r = sh(cmd["remove"], stdin, cwd)
    assert r.returncode == 0, f"{cmd['id']}: remove of an absent thing failed: {r.stderr!r}"


def shellcheck(cmds: list[dict[str, Any]]) -> None:
    assert SHELLCHECK is not None
    for cmd in cmds:
        for field in ("check", "change", "remove"):
            if field not in cmd:
                continue
            r = subprocess.run(
                [SHELLCHECK, "-s", "bash", "-e", "2016", "-e", "2154", "-"],
                input=cmd[field].encode(),
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert r.returncode == 0, f"{cmd['id']} {field}: {r.stdout.decode()}"


needs_shellcheck = pytest.mark.skipif(
    SHELLCHECK is None, reason="shellcheck is not installed (apt-get install shellcheck)"
)
SYSTEM = os.environ.get("AGENT_TEST_SYSTEM") == "1"
needs_system = pytest.mark.skipif(
    not SYSTEM or os.geteuid() != 0,
    reason="changes the host (users, groups, packages or units): set AGENT_TEST_SYSTEM=1 and run"
    " as root",
)


def drop(value: Any) -> RunOutcome:
    """Replace a pattern made of ``value`` by an empty one: the diff-run removes every command."""
    old = parse_commands(value if isinstance(value, list) else [value], where="old")
    return asyncio.run(
        diff_run([], old, exec=DEFAULT_EXEC, check=False, no_remove=False, source="test")
    )


def error_of(outcome: RunOutcome) -> str:
    assert outcome.error is not None, outcome
    return str(outcome.error)


# ------------------------------------------------------------------------------ library layout


def test_native_library_starts_with_generated_comment_and_wraps_every_native() -> None:
    text = (LIB / "native.libsonnet").read_text()
    assert text.splitlines()[0] == "// Generated by agent"
    out = render(
        "local n = etcha.native; {"
        " arch: n.getArch(), cfg: n.getConfig(), env: n.getEnv('HOME'),"
        " envf: n.getEnv('X', 'fb'), file: n.getFile('/p'), os: n.getOS(), path: n.getPath(),"
        " rec: n.getRecord('a', 'example.com'), rand: n.randStr(3),"
        " match: n.regexMatch('b', 'abc'), render: n.render('x') }",
        config={"vars": {"k": 1}},
    )
    assert out == {
        "arch": "amd64",
        "cfg": {"vars": {"k": 1}},
        "env": "env:HOME:None",
        "envf": "env:X:fb",
        "file": "file:/p:None",
        "os": "linux",
        "path": "/patterns",
        "rec": ["a:example.com:None"],
        "rand": "rrr",
        "match": True,
        "render": {"rendered": "x"},
    }


def test_index_exposes_every_library_function() -> None:
    names = render("std.objectFields(etcha)")
    assert set(names) >= {
        "apt",
        "aptKey",
        "copy",
        "dir",
        "file",
        "group",
        "line",
        "native",
        "symlink",
        "systemdUnit",
        "user",
    }
    for name in names:
        if name != "native":
            assert render(f"std.isFunction(etcha.{name})") is True


def test_every_library_file_renders_as_a_valid_run_list_for_the_command_model(
    tmp_path: Path,
) -> None:
    from agent.run.model import parse_commands

    dir_id = q(f"dir {tmp_path / 'd'}")
    run = render(
        "["
        f" etcha.file(path={q(tmp_path / 'f')}, contents='x', onChange=[{dir_id}]),"
        f" etcha.dir(path={q(tmp_path / 'd')}),"
        f" etcha.copy(src={q(tmp_path / 'f')}, dst={q(tmp_path / 'c')}),"
        f" etcha.line(path={q(tmp_path / 'f')}, match='^x', replacement='y'),"
        f" etcha.symlink(src={q(tmp_path / 'f')}, dst={q(tmp_path / 'l')}),"
        " etcha.apt(packages=['curl', 'jq']),"
        " etcha.aptKey(name='k', key='KEY', repo='http://deb.example stable main'),"
        " etcha.systemdUnit(name='x.service', contents='[Unit]\\n'),"
        " etcha.user(name='u', uid=2000, groups=['g']),"
        " etcha.group(name='g', gid=2000),"
        "]"
    )
    cmds = parse_commands(run, where="run")
    assert len(cmds) == len(flatten(run))
    ids = [c["id"] for c in flatten(run)]
    assert len(ids) == len(set(ids)), ids


def test_missing_required_argument_is_a_render_error() -> None:
    with pytest.raises(RenderError):
        render("etcha.file(contents='x')")


# ----------------------------------------------------------------------------- agent binary


def test_agent_bin_defaults_to_agent_and_follows_vars_and_argument() -> None:
    assert render("etcha.dir(path='/d').check", config={}).startswith("agent dir check ")
    assert render("etcha.dir(path='/d').check", config={"vars": {}}).startswith("agent dir ")
    assert render(
        "etcha.dir(path='/d').check", config={"vars": {"agentBin": "/x/agent"}}
    ).startswith("/x/agent dir check ")
    assert render("etcha.symlink(src='a', dst='b', agentBin='mine').change", config={}).startswith(
        "mine link change "
    )


def test_fast_quote_and_format_helpers_equal_std_format_and_escape_string_bash() -> None:
    # helpers.libsonnet avoids std.format and std.escapeStringBash (Jsonnet code in go-jsonnet,
    # ~1 ms a call): its q, s and t must give exactly what those give, for every kind of value.
    values = ['"/a b/it\'s \\"q\\" $x"', "''", "'/ü/ñ\\''", "5", "2.5", "true", "null"]
    for v in values:
        got = render(
            "local h = import 'helpers.libsonnet'; "
            f"[h.q({v}), h.s({v}), h.t({v}), 'x' + h.t({v}) + 'y' + h.t({v})]"
        )
        want = render(
            f"[std.escapeStringBash('%s' % ({v})), '%s' % ({v}), '%s' % [{v}], "
            f"'x%sy%s' % [{v}, {v}]]"
        )
        assert got == want, v


# ------------------------------------------------------------------- file helpers, for real


def test_file_command_shape_and_real_cycle(tmp_path: Path) -> None:
    target = tmp_path / "it's a file"
    cmd = render(
        f"etcha.file(path={q(target)}, contents='a\\nb', mode='0600', onChange=['^other$'])"
    )
    assert cmd["id"] == f"file {target}"
    assert cmd["stdin"] == "a\nb"
    assert cmd["onChange"] == ["^other$"]
    assert {"check", "change", "remove"} <= cmd.keys()
    assert_idempotent(cmd, tmp_path)
    sh(cmd["change"], cmd["stdin"], tmp_path)
    assert target.read_bytes() == b"a\nb"
    assert target.stat().st_mode & 0o777 == 0o600


def test_file_with_custom_id_and_no_contents_manages_only_existence(tmp_path: Path) -> None:
    cmd = render(f"etcha.file(path={q(tmp_path / 'e')}, id='empty')")
    assert cmd["id"] == "empty"
    assert "stdin" not in cmd and "onChange" not in cmd
    assert_idempotent(cmd, tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_file_owner_and_group_are_applied(tmp_path: Path) -> None:
    target = tmp_path / "owned"
    cmd = render(f"etcha.file(path={q(target)}, contents='x', owner='65534', group='65534')")
    assert_idempotent(cmd, tmp_path)
    sh(cmd["change"], cmd["stdin"], tmp_path)
    assert (target.stat().st_uid, target.stat().st_gid) == (65534, 65534)


def test_dir_real_cycle(tmp_path: Path) -> None:
    target = tmp_path / "a b" / "c"
    cmd = render(f"etcha.dir(path={q(target)}, mode='0750')")
    assert cmd["id"] == f"dir {target}"
    assert_idempotent(cmd, tmp_path)
    sh(cmd["change"], None, tmp_path)
    assert target.stat().st_mode & 0o777 == 0o750


def test_copy_real_cycle(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("copy me\n")
    dst = tmp_path / "dst"
    cmd = render(f"etcha.copy(src={q(src)}, dst={q(dst)}, mode='0640')")
    assert cmd["id"] == f"copy {dst}"
    assert_idempotent(cmd, tmp_path)
    sh(cmd["change"], None, tmp_path)
    assert dst.read_text() == "copy me\n"
    assert dst.stat().st_mode & 0o777 == 0o640


def test_line_real_cycle_with_groups(tmp_path: Path) -> None:
    target = tmp_path / "sshd_config"
    target.write_text("Port 22\n#PermitRootLogin yes\n")
    cmd = render(
        f"etcha.line(path={q(target)}, match='^#?(PermitRootLogin) .*', replacement='${{1}} no')"
    )
    assert cmd["id"] == f"line {target} ^#?(PermitRootLogin) .*"
    assert sh(cmd["change"], None, tmp_path).returncode == 0
    assert target.read_text() == "Port 22\nPermitRootLogin no\n"
    target.write_text("Port 22\n#PermitRootLogin yes\n")
    assert_idempotent(cmd, tmp_path)
    assert target.read_text() == "Port 22\n"  # remove deleted the managed line


def test_symlink_real_cycle(tmp_path: Path) -> None:
    dst = tmp_path / "link"
    cmd = render(f"etcha.symlink(src='/etc/hostname', dst={q(dst)})")
    assert cmd["id"] == f"symlink {dst}"
    assert_idempotent(cmd, tmp_path)
    sh(cmd["change"], None, tmp_path)
    assert os.readlink(dst) == "/etc/hostname"


# ----------------------------------------------------- what each remove path refuses to delete


def test_dropped_dir_refuses_to_delete_a_non_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "srv" / "app"
    cmd = render(f"etcha.dir(path={q(target)})")
    assert sh(cmd["change"], None, tmp_path).returncode == 0
    (target / "uploads").mkdir()
    (target / "uploads" / "photo.jpg").write_bytes(b"\xff\xd8 someone's photo")
    err = error_of(drop(cmd))
    assert f"{target}: directory not empty: expected an empty directory, got 1 entry" in err
    assert (target / "uploads" / "photo.jpg").read_bytes() == b"\xff\xd8 someone's photo"
    (target / "uploads" / "photo.jpg").unlink()
    (target / "uploads").rmdir()
    assert drop(cmd).error is None  # empty: what the pattern made goes
    assert not target.exists() and target.parent.is_dir()


def test_dropped_file_without_contents_refuses_to_delete_a_file_with_data(tmp_path: Path) -> None:
    target = tmp_path / "app.db"
    target.write_bytes(b"rows the application wrote")
    cmd = render(f"etcha.file(path={q(target)}, mode='0640')")  # manages mode only
    assert sh(cmd["change"], None, tmp_path).returncode == 0
    err = error_of(drop(cmd))
    assert "expected the contents the pattern wrote (0 bytes), got other contents (26 bytes)" in err
    assert target.read_bytes() == b"rows the application wrote"


def test_file_remove_refuses_an_edited_file_and_a_directory_in_its_place(tmp_path: Path) -> None:
    target = tmp_path / "motd"
    cmd = render(f"etcha.file(path={q(target)}, contents='managed\\n')")
    assert sh(cmd["change"], cmd["stdin"], tmp_path).returncode == 0
    target.write_text("edited by an operator\n")
    assert drop(cmd).error is None  # the check fails: not the pattern's file, nothing removed
    r = sh(cmd["remove"], cmd["stdin"], tmp_path)  # the script itself refuses too
    assert r.returncode == 1
    assert b"expected the contents the pattern wrote (8 bytes)" in r.stderr
    assert target.read_text() == "edited by an operator\n"
    target.unlink()
    target.mkdir()
    (target / "keep").write_text("x")
    r = sh(cmd["remove"], cmd["stdin"], tmp_path)
    assert r.returncode == 1
    assert b"expected a regular file, got a directory; nothing was removed" in r.stderr
    assert (target / "keep").read_text() == "x"


def test_copy_remove_refuses_an_edited_destination(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("v1\n")
    dst = tmp_path / "dst"
    cmd = render(f"etcha.copy(src={q(src)}, dst={q(dst)})")
    assert sh(cmd["change"], None, tmp_path).returncode == 0
    dst.write_text("v1 plus a local fix\n")
    assert drop(cmd).error is None
    r = sh(cmd["remove"], None, tmp_path)
    assert r.returncode == 1
    assert b"got other contents (20 bytes); nothing was removed" in r.stderr
    assert dst.read_text() == "v1 plus a local fix\n"


def test_copy_without_mode_gives_the_source_permissions(tmp_path: Path) -> None:
    src = tmp_path / "id_ed25519"
    src.write_text("private\n")
    src.chmod(0o600)
    dst = tmp_path / "copy"
    cmd = render(f"etcha.copy(src={q(src)}, dst={q(dst)})")
    assert_idempotent(cmd, tmp_path)
    assert sh(cmd["change"], None, tmp_path).returncode == 0
    assert dst.stat().st_mode & 0o7777 == 0o600


def test_line_remove_keeps_lines_the_pattern_did_not_write(tmp_path: Path) -> None:
    target = tmp_path / "sshd_config"
    target.write_text("PermitRootLogin no\n#PermitRootLogin yes (see ticket 42)\n")
    cmd = render(
        f"etcha.line(path={q(target)}, match='^#?(PermitRootLogin) .*', replacement='${{1}} no')"
    )
    r = sh(cmd["remove"], None, tmp_path)
    assert r.returncode == 0, r.stderr
    # The commented line matches, but change would rewrite it: the pattern did not write it.
    assert target.read_text() == "#PermitRootLogin yes (see ticket 42)\n"


def test_symlink_remove_keeps_the_target_and_refuses_a_directory_in_place(tmp_path: Path) -> None:
    target = tmp_path / "releases" / "v2"
    target.mkdir(parents=True)
    (target / "app").write_text("binary")
    dst = tmp_path / "current"
    cmd = render(f"etcha.symlink(src={q(target)}, dst={q(dst)})")
    assert sh(cmd["change"], None, tmp_path).returncode == 0
    assert drop(cmd).error is None
    assert not dst.is_symlink()
    assert (target / "app").read_text() == "binary"  # the link went, never its target
    dst.mkdir()
    (dst / "local").write_text("data")
    r = sh(cmd["remove"], None, tmp_path)
    assert r.returncode == 1
    assert b"expected a symlink to" in r.stderr and b"got a directory" in r.stderr
    assert (dst / "local").read_text() == "data"


def test_apt_key_remove_keeps_edited_key_and_list_files(tmp_path: Path) -> None:
    keyring, lists = tmp_path / "keyrings", tmp_path / "sources"
    lists.mkdir()
    key, lst, _update = render(
        f"etcha.aptKey(name='k', key='KEY\\n', repo='http://deb.example stable main',"
        f" dir={q(keyring)}, listDir={q(lists)})"
    )
    for cmd in (key, lst):
        assert sh(cmd["change"], cmd["stdin"], tmp_path).returncode == 0
    (keyring / "k.asc").write_text("ROTATED KEY\n")
    (lists / "k.list").write_text("deb http://mirror.local stable main\n")
    for cmd in (key, lst):
        r = sh(cmd["remove"], cmd["stdin"], tmp_path)
        assert r.returncode == 1
        assert b"nothing was removed" in r.stderr
    assert (keyring / "k.asc").read_text() == "ROTATED KEY\n"
    assert (lists / "k.list").read_text() == "deb http://mirror.local stable main\n"


def test_systemd_unit_file_remove_keeps_an_edited_unit_file(tmp_path: Path) -> None:
    unit_file, *_ = render(
        f"etcha.systemdUnit(name='web.service', contents='[Service]\\n', dir={q(tmp_path)})"
    )
    path = tmp_path / "web.service"
    path.write_text("[Service]\nExecStart=/usr/local/bin/web --tuned\n")
    r = sh(unit_file["remove"], unit_file["stdin"], tmp_path)
    assert r.returncode == 1  # and `systemctl daemon-reload` after `&&` never ran
    assert b"nothing was removed" in r.stderr
    assert path.read_text() == "[Service]\nExecStart=/usr/local/bin/web --tuned\n"


def test_apt_remove_uses_dpkg_so_dependent_packages_are_never_removed() -> None:
    cmd = render("etcha.apt(packages=['a', 'b'])")
    assert cmd["remove"] == (
        "dpkg --dry-run --remove 'a' 'b' >/dev/null"
        " && DEBIAN_FRONTEND=noninteractive dpkg --remove 'a' 'b'"
    )
    assert "apt-get" not in cmd["remove"]


@needs_shellcheck
def test_file_helper_scripts_pass_shellcheck(tmp_path: Path) -> None:
    cmds = flatten(
        render(
            "["
            " etcha.file(path='/tmp/a b', contents='$x `y`', owner='root', group='root'),"
            " etcha.dir(path='/tmp/d'),"
            " etcha.copy(src='https://h/x#A:b\\r\\nC:d', dst='/tmp/c'),"
            " etcha.line(path='/tmp/f', match='^a=\\\\$', replacement='${1}'),"
            " etcha.symlink(src='/a', dst='/b'),"
            "]"
        )
    )
    shellcheck(cmds)


# ------------------------------------------------------------------------- users and groups


@pytest.fixture
def unique_name() -> Iterator[str]:
    """A fresh user/group name; whatever the test created under it is deleted afterwards."""
    name = f"agt{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)
        subprocess.run(["groupdel", name], capture_output=True, check=False)
        subprocess.run(["groupdel", f"{name}g"], capture_output=True, check=False)


def _free_id() -> int:
    used = {g.gr_gid for g in grp.getgrall()} | {p.pw_uid for p in pwd.getpwall()}
    return next(i for i in range(23000, 30000) if i not in used)


@needs_system
def test_group_real_cycle_with_gid(unique_name: str, tmp_path: Path) -> None:
    gid = _free_id()
    cmd = render(f"etcha.group(name={q(unique_name)}, gid={gid})")
    assert cmd["id"] == f"group {unique_name}"
    assert_idempotent(cmd, tmp_path)
    sh(cmd["change"], None, tmp_path)
    assert grp.getgrnam(unique_name).gr_gid == gid


@needs_system
def test_group_gid_mismatch_is_fixed_by_change(unique_name: str, tmp_path: Path) -> None:
    subprocess.run(["groupadd", unique_name], check=True)
    gid = _free_id()
    cmd = render(f"etcha.group(name={q(unique_name)}, gid='{gid}')")
    assert sh(cmd["check"], None, tmp_path).returncode != 0
    assert sh(cmd["change"], None, tmp_path).returncode == 0
    assert sh(cmd["check"], None, tmp_path).returncode == 0
    assert grp.getgrnam(unique_name).gr_gid == gid


@needs_system
def test_user_real_cycle_with_fields_and_groups(unique_name: str, tmp_path: Path) -> None:
    extra = f"{unique_name}g"
    setup = render(f"etcha.group(name={q(extra)})")
    assert sh(setup["change"], None, tmp_path).returncode == 0
    uid = _free_id()
    cmd = render(
        f"etcha.user(name={q(unique_name)}, uid={uid}, gid='nogroup', home='/nonexistent',"
        f" shell='/usr/sbin/nologin', comment='agent test', groups=[{q(extra)}])"
    )
    assert cmd["id"] == f"user {unique_name}"
    assert_idempotent(cmd, tmp_path)
    sh(cmd["change"], None, tmp_path)
    entry = pwd.getpwnam(unique_name)
    assert (entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell, entry.pw_gecos) == (
        uid,
        grp.getgrnam("nogroup").gr_gid,
        "/nonexistent",
        "/usr/sbin/nologin",
        "agent test",
    )
    assert unique_name in grp.getgrnam(extra).gr_mem


@needs_system
def test_user_field_mismatch_is_fixed_by_change(unique_name: str, tmp_path: Path) -> None:
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", unique_name], check=True)
    cmd = render(f"etcha.user(name={q(unique_name)}, shell='/bin/bash')")
    assert sh(cmd["check"], None, tmp_path).returncode != 0
    r = sh(cmd["change"], None, tmp_path)
    assert r.returncode == 0, r.stderr
    assert sh(cmd["check"], None, tmp_path).returncode == 0
    assert pwd.getpwnam(unique_name).pw_shell == "/bin/bash"


def _exists(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


@needs_system
def test_user_remove_keeps_the_home_directory_and_its_files(
    unique_name: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    cmd = render(f"etcha.user(name={q(unique_name)}, home={q(home)}, createHome=true)")
    assert sh(cmd["change"], None, tmp_path).returncode == 0
    (home / "notes.txt").write_text("the user's work")
    assert drop(cmd).error is None
    assert not _exists(pwd.getpwnam, unique_name)
    assert (home / "notes.txt").read_text() == "the user's work"


@needs_system
def test_user_remove_home_refuses_a_home_the_user_does_not_own(
    unique_name: str, tmp_path: Path
) -> None:
    shared = tmp_path / "srv"
    shared.mkdir()
    (shared / "site.html").write_text("another service's data")  # owned by root
    cmd = render(f"etcha.user(name={q(unique_name)}, home={q(shared)}, removeHome=true)")
    assert sh(cmd["change"], None, tmp_path).returncode == 0
    err = error_of(drop(cmd))
    assert f"error removing id {cmd['id']}" in err or "not owned" in err, err
    assert (shared / "site.html").read_text() == "another service's data"


@needs_system
def test_group_remove_refuses_the_primary_group_of_a_user(unique_name: str, tmp_path: Path) -> None:
    cmd = render(f"etcha.group(name={q(unique_name)})")
    assert sh(cmd["change"], None, tmp_path).returncode == 0
    subprocess.run(["useradd", "-M", "-g", unique_name, unique_name], check=True)
    error_of(drop(cmd))
    assert _exists(grp.getgrnam, unique_name)
    assert pwd.getpwnam(unique_name).pw_gid == grp.getgrnam(unique_name).gr_gid


@needs_shellcheck
def test_user_and_group_scripts_pass_shellcheck() -> None:
    shellcheck(
        flatten(
            render(
                "[etcha.user(name='u', uid=1, gid='g', home='/h', shell='/s', comment='c d',"
                " groups=['a', 'b'], system=true, createHome=true, removeHome=true),"
                " etcha.user(name='v'), etcha.group(name='g'), etcha.group(name='h', gid=7,"
                " system=true)]"
            )
        )
    )


# -------------------------------------------------------------------- apt, aptKey, systemd


def test_apt_command_shape() -> None:
    cmd = render("etcha.apt(packages='jq', update=true, purge=true)")
    assert cmd["id"] == "apt jq"
    assert "dpkg-query" in cmd["check"] and "'jq'" in cmd["check"]
    assert cmd["change"].startswith("apt-get update -q && ")
    assert "apt-get install -y -q --no-install-recommends" in cmd["change"]
    assert cmd["remove"] == (
        "dpkg --dry-run --purge 'jq' >/dev/null && DEBIAN_FRONTEND=noninteractive dpkg --purge 'jq'"
    )
    many = render("etcha.apt(packages=['a', 'b'], recommends=true)")
    assert many["id"] == "apt a b"
    assert "--no-install-recommends" not in many["change"]


def test_apt_check_detects_installed_and_missing_packages(tmp_path: Path) -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("dpkg-query is not available on this host")
    installed = render("etcha.apt(packages=['bash', 'coreutils'])")
    assert sh(installed["check"], None, tmp_path).returncode == 0
    missing = render("etcha.apt(packages=['bash', 'agent-no-such-package-xyz'])")
    assert sh(missing["check"], None, tmp_path).returncode != 0


@needs_system
@pytest.mark.skipif(
    os.environ.get("AGENT_TEST_NETWORK") != "1",
    reason="apt-get install needs a package mirror: set AGENT_TEST_NETWORK=1 (and"
    " AGENT_TEST_SYSTEM=1) to run",
)
def test_apt_real_cycle_installs_and_removes_a_package(tmp_path: Path) -> None:
    cmd = render("etcha.apt(packages='sl', update=true, purge=true)")
    try:
        assert_idempotent(cmd, tmp_path)
    finally:
        sh(cmd["remove"], None, tmp_path)


def _deb(tmp: Path, name: str, depends: str | None = None) -> Path:
    """Build an empty Debian package (no files, only control data) with dpkg-deb."""
    root = tmp / name
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: agent tests <tests@example.invalid>\nDescription: agent test package\n"
        + (f"Depends: {depends}\n" if depends else "")
    )
    out = tmp / f"{name}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def _installed(name: str) -> bool:
    probe = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, check=False
    )
    return probe.stdout == b"install ok installed"


@needs_system
@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_apt_remove_refuses_a_package_that_another_package_depends_on(tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    base, dependent = f"agent-test-base-{suffix}", f"agent-test-dependent-{suffix}"
    debs = [_deb(tmp_path, base), _deb(tmp_path, dependent, depends=base)]
    try:
        subprocess.run(["dpkg", "-i", *map(str, debs)], check=True, capture_output=True)
        cmd = render(f"etcha.apt(packages={q(base)})")
        assert sh(cmd["check"], None, tmp_path).returncode == 0
        error_of(drop(cmd))  # apt-get remove would have removed the dependent package too
        assert _installed(base) and _installed(dependent)  # selections unchanged too
    finally:
        subprocess.run(["dpkg", "--purge", dependent, base], capture_output=True, check=False)


@needs_shellcheck
def test_apt_and_apt_key_scripts_pass_shellcheck() -> None:
    shellcheck(
        flatten(
            render(
                "[etcha.apt(packages=['a', 'b'], update=true, purge=true),"
                " etcha.aptKey(name='k', key='https://h/k.asc#A:b', repo='https://h stable main'),"
                " etcha.aptKey(name='j', key='-----BEGIN PGP-----')]"
            )
        )
    )


def test_apt_key_files_real_cycle_and_update_is_triggered_only(tmp_path: Path) -> None:
    keyring = tmp_path / "keyrings"
    lists = tmp_path / "sources"
    lists.mkdir()
    cmds = render(
        f"etcha.aptKey(name='k', key='KEY DATA\\n', repo='http://deb.example stable main',"
        f" dir={q(keyring)}, listDir={q(lists)}, onChange=['^after$'])"
    )
    assert [c["id"] for c in cmds] == ["aptKey k key", "aptKey k list", "aptKey k update"]
    key, lst, update = cmds
    assert key["onChange"] == lst["onChange"] == ["^aptKey k update$", "^after$"]
    assert update == {"id": "aptKey k update", "change": "apt-get update -q"}
    assert_idempotent(key, tmp_path)
    assert_idempotent(lst, tmp_path)
    sh(key["change"], key["stdin"], tmp_path)
    sh(lst["change"], lst["stdin"], tmp_path)
    assert (keyring / "k.asc").read_text() == "KEY DATA\n"
    assert (lists / "k.list").read_text() == (
        f"deb [signed-by={keyring}/k.asc] http://deb.example stable main\n"
    )


def test_apt_key_from_url_uses_copy() -> None:
    cmds = render("etcha.aptKey(name='k', key='https://example.com/k.asc')")
    assert [c["id"] for c in cmds] == ["aptKey k key", "aptKey k update"]
    assert " copy check " in cmds[0]["check"]
    assert "'https://example.com/k.asc' '/etc/apt/keyrings/k.asc'" in cmds[0]["check"]


def test_systemd_unit_command_shape() -> None:
    cmds = render("etcha.systemdUnit(name='web.service', contents='[Service]\\n', onChange='^n$')")
    ids = [c["id"] for c in cmds]
    assert ids == [
        "systemdUnit web.service file",
        "systemdUnit web.service enable",
        "systemdUnit web.service start",
        "systemdUnit web.service restart",
    ]
    unit_file, enable, start, restart = cmds
    assert unit_file["stdin"] == "[Service]\n"
    assert unit_file["change"].endswith("&& systemctl daemon-reload")
    assert unit_file["onChange"] == ["^systemdUnit web\\.service restart$", "^n$"]
    assert enable["check"] == "systemctl is-enabled --quiet 'web.service'"
    assert start["remove"] == "systemctl stop 'web.service'"
    assert enable["onChange"] == start["onChange"] == ["^n$"]
    assert set(restart) == {"id", "change"}  # only ever triggered
    bare = render("etcha.systemdUnit(name='x.timer', start=false)")
    assert [c["id"] for c in bare] == ["systemdUnit x.timer enable"]


@needs_shellcheck
def test_systemd_unit_scripts_pass_shellcheck() -> None:
    shellcheck(flatten(render("etcha.systemdUnit(name='a b.service', contents='[Unit]\\n')")))


@needs_system
@pytest.mark.skipif(NO_SYSTEMD, reason="systemd is not PID 1 here, so systemctl cannot run")
def test_systemd_unit_executes(tmp_path: Path) -> None:
    name = f"agent-test-{uuid.uuid4().hex[:8]}.service"
    cmds = render(
        f"etcha.systemdUnit(name={q(name)}, dir='/run/systemd/system',"
        " contents='[Service]\\nType=oneshot\\nRemainAfterExit=yes\\nExecStart=/bin/true\\n"
        "[Install]\\nWantedBy=multi-user.target\\n')"
    )
    try:
        for cmd in cmds[:3]:
            assert_idempotent(cmd, tmp_path)
    finally:
        for cmd in reversed(cmds[:3]):
            sh(cmd["remove"], cmd.get("stdin"), tmp_path)
