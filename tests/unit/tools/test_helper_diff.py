"""Issue 15 point 3: `--diff` for the file helpers, mode lines and redaction, with real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from support import run_agent

DIFF = {"ETCHA_DIFF": "1"}


def test_file_check_prints_a_unified_diff_and_changes_nothing(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("a\nb\n")
    f.chmod(0o644)
    res = run_agent("file", "check", str(f), "a\nc\n", env=DIFF)
    assert res.returncode == 1
    assert res.stdout.splitlines() == [
        f"--- {f}",
        f"+++ {f}",
        "@@ -1,2 +1,2 @@",
        " a",
        "-b",
        "+c",
    ]
    assert f.read_text() == "a\nb\n"


def test_file_change_prints_what_it_changed(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("a\nb\n")
    f.chmod(0o644)
    res = run_agent("file", "change", str(f), "a\nc\n", env=DIFF)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[2:] == ["@@ -1,2 +1,2 @@", " a", "-b", "+c"]
    assert f.read_text() == "a\nc\n"
    again = run_agent("file", "change", str(f), "a\nc\n", env=DIFF)
    assert again.stdout == ""  # nothing changed, nothing printed


def test_helpers_print_no_diff_without_etcha_diff(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("a\n")
    res = run_agent("file", "check", str(f), "b\n")
    assert res.returncode == 1 and res.stdout == ""


def test_copy_check_diffs_a_new_file_from_dev_null(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_text("hello\n")
    src.chmod(0o644)
    res = run_agent("copy", "check", str(src), str(dst), env=DIFF)
    assert res.returncode == 1
    assert res.stdout.splitlines() == [
        "new file, mode 0644",
        "--- /dev/null",
        f"+++ {dst}",
        "@@ -0,0 +1 @@",
        "+hello",
    ]
    assert not dst.exists()


def test_copy_change_prints_what_it_changed(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_text("new\n")
    src.chmod(0o644)
    dst.write_text("old\n")
    dst.chmod(0o644)
    res = run_agent("copy", "change", str(src), str(dst), env=DIFF)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[2:] == ["@@ -1 +1 @@", "-old", "+new"]
    assert dst.read_text() == "new\n"


def test_line_check_prints_the_line_diff(tmp_path: Path) -> None:
    f = tmp_path / "conf"
    f.write_text("x=1\ny=2\n")
    res = run_agent("line", "check", str(f), "^x=.*", "x=5", env=DIFF)
    assert res.returncode == 1
    assert res.stdout.splitlines()[2:] == ["@@ -1,2 +1,2 @@", "-x=1", "+x=5", " y=2"]
    assert f.read_text() == "x=1\ny=2\n"


def test_line_change_prints_what_it_changed(tmp_path: Path) -> None:
    f = tmp_path / "conf"
    f.write_text("y=2\n")
    res = run_agent("line", "change", str(f), "^x=.*", "x=5", env=DIFF)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[2:] == ["@@ -1 +1,2 @@", " y=2", "+x=5"]
    assert f.read_text() == "y=2\nx=5\n"


def test_mode_change_prints_mode_old_to_new(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("same\n")
    f.chmod(0o644)
    res = run_agent("file", "check", "-p", "0640", str(f), "same\n", env=DIFF)
    assert res.returncode == 1
    assert res.stdout.splitlines() == ["mode 0644 -> 0640"]
    changed = run_agent("file", "change", "-p", "0640", str(f), "same\n", env=DIFF)
    assert changed.stdout.splitlines() == ["mode 0644 -> 0640"]
    assert f.stat().st_mode & 0o777 == 0o640


def test_content_of_a_0600_file_is_hidden(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("old-secret\n")
    f.chmod(0o600)
    res = run_agent("file", "check", "-p", "0600", str(f), "new-secret\n", env=DIFF)
    assert res.returncode == 1
    assert res.stdout.splitlines() == [f"{f}: (content hidden)"]
    assert "secret" not in res.stdout.replace(str(f), "")


def test_content_wanted_at_0600_is_hidden_for_a_new_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    res = run_agent("file", "change", "-p", "0600", str(f), "new-secret\n", env=DIFF)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["new file, mode 0600", f"{f}: (content hidden)"]


def test_local_diff_hides_paths_matching_run_diff_redact(tmp_path: Path) -> None:
    (tmp_path / "agent.jsonnet").write_text(json.dumps({"run": {"diffRedact": ["*/creds/*"]}}))
    creds = tmp_path / "creds"
    creds.mkdir()
    secret, plain = creds / "db.conf", tmp_path / "plain.conf"
    for path in (secret, plain):
        path.write_text("password=old\n")
        path.chmod(0o644)
    cmds = [
        {
            "id": name,
            "check": f"agent line check {path} '^password=.*' password=new",
            "change": f"agent line change {path} '^password=.*' password=new",
        }
        for name, path in (("secret", secret), ("plain", plain))
    ]
    text = ", ".join(json.dumps(c) for c in cmds)
    res = run_agent("local", "-c", "--diff", text, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"secret (check):\n    {secret}: (content hidden)\n" in out
    assert "    -password=old\n    +password=new\n" in out  # the plain file's diff
    assert out.count("password=old") == 1
    assert out.splitlines()[-1] == "Would change 2: secret, plain"
    assert secret.read_text() == plain.read_text() == "password=old\n"


def test_local_diff_in_change_mode_prints_what_changed(tmp_path: Path) -> None:
    f = tmp_path / "motd"
    f.write_text("hello\n")
    f.chmod(0o644)
    cmd = {
        "id": "motd",
        "check": f"agent file check {f} 'welcome\n'",
        "change": f"agent file change {f} 'welcome\n'",
    }
    res = run_agent("local", "--diff", json.dumps(cmd), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "motd (change):",
        f"    --- {f}",
        f"    +++ {f}",
        "    @@ -1 +1 @@",
        "    -hello",
        "    +welcome",
        "Changed 1: motd",
    ]
    assert f.read_text() == "welcome\n"
    assert os.stat(f).st_mode & 0o777 == 0o644
