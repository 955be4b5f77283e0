"""Behaviour of the helper commands `agent copy|dir|file|line|link` run as real subprocesses."""

from __future__ import annotations

import http.server
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import run_agent_bytes

NOBODY = 65534


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def one_line(err: bytes) -> str:
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------------------------- file


def test_file_check_fails_with_reason_when_missing(tmp_path: Path) -> None:
    r = run_agent_bytes("file", "check", str(tmp_path / "x"), "hello")
    assert r.returncode == 1
    assert "does not exist" in one_line(r.stderr)


def test_file_change_writes_exact_contents_with_default_perms_despite_umask(
    tmp_path: Path,
) -> None:
    target = tmp_path / "x"
    old_umask = os.umask(0o077)
    try:
        r = run_agent_bytes("file", "change", str(target), "hello")
    finally:
        os.umask(old_umask)
    assert r.returncode == 0, r.stderr
    assert target.read_bytes() == b"hello"
    assert mode_of(target) == 0o644
    assert run_agent_bytes("file", "check", str(target), "hello").returncode == 0


def test_file_change_twice_does_not_rewrite(tmp_path: Path) -> None:
    target = tmp_path / "x"
    assert run_agent_bytes("file", "change", str(target), "same").returncode == 0
    inode = target.stat().st_ino
    assert run_agent_bytes("file", "change", str(target), "same").returncode == 0
    assert target.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_file_check_reports_different_contents_and_change_replaces_atomically(
    tmp_path: Path,
) -> None:
    target = tmp_path / "x"
    target.write_bytes(b"old")
    inode = target.stat().st_ino
    r = run_agent_bytes("file", "check", str(target), "new")
    assert r.returncode == 1
    assert "contents differ" in one_line(r.stderr)
    assert run_agent_bytes("file", "change", str(target), "new").returncode == 0
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != inode  # renamed into place, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_file_perms_flag_is_checked_and_applied(tmp_path: Path) -> None:
    target = tmp_path / "x"
    assert run_agent_bytes("file", "change", str(target), "a").returncode == 0
    r = run_agent_bytes("file", "check", "-p", "0600", str(target), "a")
    assert r.returncode == 1
    assert "permissions are 0644, expected 0600" in one_line(r.stderr)
    assert run_agent_bytes("file", "change", "-p", "600", str(target), "a").returncode == 0
    assert mode_of(target) == 0o600
    assert run_agent_bytes("file", "check", "-p", "0600", str(target), "a").returncode == 0


def test_file_contents_from_stdin_are_exact(tmp_path: Path) -> None:
    target = tmp_path / "x"
    data = b"line1\nline2 \x00\xff no newline"
    assert run_agent_bytes("file", "change", "--", str(target), "-", stdin=data).returncode == 0
    assert target.read_bytes() == data
    assert run_agent_bytes("file", "check", "--", str(target), "-", stdin=data).returncode == 0
    assert (
        run_agent_bytes("file", "check", "--", str(target), "-", stdin=data + b"\n").returncode == 1
    )


def test_file_without_contents_creates_empty_and_keeps_existing_contents(tmp_path: Path) -> None:
    target = tmp_path / "x"
    assert run_agent_bytes("file", "change", str(target)).returncode == 0
    assert target.read_bytes() == b""
    target.write_bytes(b"keep")
    target.chmod(0o600)
    assert run_agent_bytes("file", "check", str(target)).returncode == 1
    assert run_agent_bytes("file", "change", str(target)).returncode == 0
    assert target.read_bytes() == b"keep"
    assert mode_of(target) == 0o644


def test_file_remove_deletes_and_succeeds_when_absent(tmp_path: Path) -> None:
    target = tmp_path / "x"
    target.write_text("x")
    assert run_agent_bytes("file", "remove", str(target)).returncode == 0
    assert not target.exists()
    assert run_agent_bytes("file", "remove", str(target)).returncode == 0


def test_file_remove_refuses_a_directory_and_deletes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "x"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "data").write_text("keep")
    r = run_agent_bytes("file", "remove", str(target))
    assert r.returncode == 1
    assert one_line(r.stderr).endswith(
        f"{target}: expected a regular file or a symlink, got a directory; nothing was removed"
    )
    assert (target / "sub" / "data").read_text() == "keep"


def test_file_remove_refuses_a_special_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = run_agent_bytes("file", "remove", str(fifo))
    assert r.returncode == 1
    assert "expected a regular file or a symlink, got a special file" in one_line(r.stderr)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_file_remove_with_contents_refuses_a_file_with_other_contents(tmp_path: Path) -> None:
    target = tmp_path / "x"
    target.write_text("edited by someone else\n")
    r = run_agent_bytes("file", "remove", "--", str(target), "-", stdin=b"written by the pattern\n")
    assert r.returncode == 1
    assert one_line(r.stderr).endswith(
        f"{target}: expected the contents the pattern wrote (23 bytes), got other contents"
        " (23 bytes); nothing was removed"
    )
    assert target.read_text() == "edited by someone else\n"
    r = run_agent_bytes("file", "remove", "--", str(target), "", stdin=b"")
    assert r.returncode == 1  # '' = the empty file that change makes without contents
    assert target.exists()
    same = target.read_bytes()
    assert run_agent_bytes("file", "remove", "--", str(target), "-", stdin=same).returncode == 0
    assert not target.exists()


def test_file_remove_with_contents_refuses_a_symlink(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_text("a")
    target = tmp_path / "x"
    target.symlink_to(other)
    r = run_agent_bytes("file", "remove", str(target), "a")
    assert r.returncode == 1
    assert "expected a regular file, got a symlink; nothing was removed" in one_line(r.stderr)
    assert target.is_symlink() and other.read_text() == "a"


def test_file_remove_unlinks_a_symlink_and_keeps_its_target(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_text("target data")
    target = tmp_path / "x"
    target.symlink_to(other)
    assert run_agent_bytes("file", "remove", str(target)).returncode == 0
    assert not target.is_symlink()
    assert other.read_text() == "target data"


def test_file_change_replaces_a_symlink_with_a_file(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_text("other")
    target = tmp_path / "x"
    target.symlink_to(other)
    assert "symlink" in one_line(run_agent_bytes("file", "check", str(target), "a").stderr)
    assert run_agent_bytes("file", "change", str(target), "a").returncode == 0
    assert not target.is_symlink()
    assert target.read_text() == "a"
    assert other.read_text() == "other"


def test_file_change_refuses_a_directory(tmp_path: Path) -> None:
    r = run_agent_bytes("file", "change", str(tmp_path), "x")
    assert r.returncode == 1
    assert "got a directory" in one_line(r.stderr)
    assert run_agent_bytes("file", "remove", str(tmp_path)).returncode == 1
    assert tmp_path.is_dir()


def test_file_change_fails_when_parent_directory_is_missing(tmp_path: Path) -> None:
    r = run_agent_bytes("file", "change", str(tmp_path / "no" / "x"), "x")
    assert r.returncode == 1
    assert "parent directory" in one_line(r.stderr)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_file_owner_and_group_by_number_are_checked_and_applied_as_root(tmp_path: Path) -> None:
    target = tmp_path / "x"
    assert run_agent_bytes("file", "change", str(target), "a").returncode == 0
    r = run_agent_bytes("file", "check", "-o", str(NOBODY), "-g", str(NOBODY), str(target), "a")
    assert r.returncode == 1
    assert f"expected {NOBODY}" in one_line(r.stderr)
    owner = ("-o", str(NOBODY), "-g", str(NOBODY))
    assert run_agent_bytes("file", "change", *owner, str(target), "a").returncode == 0
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    assert run_agent_bytes("file", "check", *owner, str(target), "a").returncode == 0
    # new contents keep the owner
    assert run_agent_bytes("file", "change", "-o", str(NOBODY), str(target), "b").returncode == 0
    assert target.stat().st_uid == NOBODY


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_file_owner_by_name_resolves_through_passwd(tmp_path: Path) -> None:
    import pwd

    name = pwd.getpwuid(NOBODY).pw_name
    target = tmp_path / "x"
    assert run_agent_bytes("file", "change", "-o", name, str(target), "a").returncode == 0
    assert target.stat().st_uid == NOBODY


def test_file_unknown_owner_is_an_error(tmp_path: Path) -> None:
    r = run_agent_bytes("file", "change", "-o", "no-such-user-xyz", str(tmp_path / "x"), "a")
    assert r.returncode == 1
    assert "unknown user 'no-such-user-xyz'" in one_line(r.stderr)
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another user")
def test_file_change_to_other_owner_fails_clearly_when_not_root() -> None:
    # tmp_path lives under a 0700 directory; the unprivileged child needs a reachable path.
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        work = Path(tmp)
        work.chmod(0o777)
        _check_chown_refused(work)


def _check_chown_refused(work: Path) -> None:
    owned = work / "owned"
    owned.write_text("a")
    os.chown(owned, NOBODY, NOBODY)
    r = run_agent_bytes("file", "check", "-o", "0", str(owned), "a", as_user=NOBODY)
    assert r.returncode == 1
    assert f"owner uid is {NOBODY}, expected 0" in one_line(r.stderr)
    r = run_agent_bytes("file", "change", "-o", "0", str(owned), "a", as_user=NOBODY)
    assert r.returncode == 1
    assert "cannot set owner" in one_line(r.stderr)
    assert "not running as root" in r.stderr.decode()
    r = run_agent_bytes("file", "change", "-o", "0", str(work / "new"), "a", as_user=NOBODY)
    assert r.returncode == 1
    assert "cannot set owner" in one_line(r.stderr)
    assert [p.name for p in work.iterdir()] == ["owned"]  # nothing written, no temp file left


def test_file_invalid_perms_and_mode_are_usage_errors(tmp_path: Path) -> None:
    assert run_agent_bytes("file", "change", "-p", "0999", str(tmp_path / "x"), "a").returncode == 2
    assert run_agent_bytes("file", "bogus", str(tmp_path / "x")).returncode == 2
    assert run_agent_bytes("file").returncode == 2
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------------- dir


def test_dir_change_creates_parents_with_exact_perms_and_is_idempotent(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    r = run_agent_bytes("dir", "check", str(target))
    assert r.returncode == 1
    assert "does not exist" in one_line(r.stderr)
    assert run_agent_bytes("dir", "change", str(target)).returncode == 0
    assert mode_of(target) == 0o755
    assert run_agent_bytes("dir", "check", str(target)).returncode == 0
    assert run_agent_bytes("dir", "change", str(target)).returncode == 0
    assert run_agent_bytes("dir", "check", "-p", "0700", str(target)).returncode == 1
    assert run_agent_bytes("dir", "change", "-p", "0700", str(target)).returncode == 0
    assert mode_of(target) == 0o700


def test_dir_remove_deletes_an_empty_directory_and_succeeds_when_absent(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()
    assert run_agent_bytes("dir", "remove", str(target)).returncode == 0
    assert not target.exists()
    assert run_agent_bytes("dir", "remove", str(target)).returncode == 0


def test_dir_remove_refuses_a_non_empty_directory_and_deletes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "d"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "f").write_text("someone's data")
    (target / "top").write_text("more data")
    r = run_agent_bytes("dir", "remove", str(target))
    assert r.returncode == 1
    assert one_line(r.stderr).endswith(
        f"{target}: directory not empty: expected an empty directory, got 2 entries;"
        " nothing was removed"
    )
    assert (target / "sub" / "f").read_text() == "someone's data"
    assert (target / "top").read_text() == "more data"


def test_dir_remove_refuses_a_symlink_and_keeps_it_and_its_target(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "f").write_text("x")
    link = tmp_path / "d"
    link.symlink_to(real)
    r = run_agent_bytes("dir", "remove", str(link))
    assert r.returncode == 1
    assert "expected a directory, got a symlink; nothing was removed" in one_line(r.stderr)
    assert link.is_symlink()
    assert (real / "f").read_text() == "x"


def test_dir_remove_refuses_a_regular_file(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.write_text("a file, not the directory")
    r = run_agent_bytes("dir", "remove", str(target))
    assert r.returncode == 1
    assert "expected a directory, got a regular file; nothing was removed" in one_line(r.stderr)
    assert target.read_text() == "a file, not the directory"


def test_dir_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    assert "expected a directory" in one_line(run_agent_bytes("dir", "check", str(target)).stderr)
    r = run_agent_bytes("dir", "change", str(target))
    assert r.returncode == 1
    assert target.read_text() == "x"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_dir_owner_is_applied_as_root(tmp_path: Path) -> None:
    target = tmp_path / "d"
    assert (
        run_agent_bytes(
            "dir", "change", "-o", str(NOBODY), "-g", str(NOBODY), str(target)
        ).returncode
        == 0
    )
    assert (target.stat().st_uid, target.stat().st_gid) == (NOBODY, NOBODY)
    assert run_agent_bytes("dir", "check", "-o", str(NOBODY), str(target)).returncode == 0
    assert run_agent_bytes("dir", "check", "-o", "0", str(target)).returncode == 1


# ---------------------------------------------------------------------------------------- copy


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/data":
            self.send_error(404)
            return
        if self.headers.get("X-Token") != "s3cret" or self.headers.get("X-Other") != "two":
            self.send_error(403)
            return
        body = b"remote contents\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_base() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_copy_local_file_check_change_idempotent_and_remove(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"payload\x00")
    dst = tmp_path / "dst"
    r = run_agent_bytes("copy", "check", str(src), str(dst))
    assert r.returncode == 1
    assert "does not exist" in one_line(r.stderr)
    assert run_agent_bytes("copy", "change", str(src), str(dst)).returncode == 0
    assert dst.read_bytes() == b"payload\x00"
    assert mode_of(dst) == 0o644
    assert run_agent_bytes("copy", "check", str(src), str(dst)).returncode == 0
    inode = dst.stat().st_ino
    assert run_agent_bytes("copy", "change", str(src), str(dst)).returncode == 0
    assert dst.stat().st_ino == inode
    assert run_agent_bytes("copy", "remove", str(src), str(dst)).returncode == 0
    assert not dst.exists()
    assert run_agent_bytes("copy", "remove", str(src), str(dst)).returncode == 0
    src.write_bytes(b"changed")
    assert run_agent_bytes("copy", "check", str(src), str(dst)).returncode == 1


def test_copy_remove_refuses_a_destination_with_other_contents(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("from the pattern\n")
    dst = tmp_path / "dst"
    assert run_agent_bytes("copy", "change", str(src), str(dst)).returncode == 0
    dst.write_text("edited on the host\n")
    r = run_agent_bytes("copy", "remove", str(src), str(dst))
    assert r.returncode == 1
    assert one_line(r.stderr).endswith(
        f"{dst}: expected the contents the pattern wrote (17 bytes), got other contents"
        " (19 bytes); nothing was removed"
    )
    assert dst.read_text() == "edited on the host\n"


def test_copy_remove_refuses_a_directory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("x")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "f").write_text("keep")
    r = run_agent_bytes("copy", "remove", str(src), str(dst))
    assert r.returncode == 1
    assert "expected a regular file, got a directory; nothing was removed" in one_line(r.stderr)
    assert (dst / "f").read_text() == "keep"


def test_copy_change_gives_the_destination_the_source_permissions(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("secret")
    src.chmod(0o600)
    dst = tmp_path / "dst"
    assert run_agent_bytes("copy", "change", str(src), str(dst)).returncode == 0
    assert (dst.read_text(), mode_of(dst)) == ("secret", 0o600)
    dst.chmod(0o644)
    r = run_agent_bytes("copy", "check", str(src), str(dst))
    assert r.returncode == 1
    assert "permissions are 0644, expected 0600" in one_line(r.stderr)
    assert run_agent_bytes("copy", "change", str(src), str(dst)).returncode == 0
    assert mode_of(dst) == 0o600
    assert run_agent_bytes("copy", "check", "-p", "0640", str(src), str(dst)).returncode == 1
    assert run_agent_bytes("copy", "change", "-p", "0640", str(src), str(dst)).returncode == 0
    assert mode_of(dst) == 0o640


def test_copy_never_copies_set_id_or_sticky_bits(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("#!/bin/sh\n")
    src.chmod(0o6755)
    dst = tmp_path / "dst"
    assert run_agent_bytes("copy", "change", str(src), str(dst)).returncode == 0
    assert mode_of(dst) == 0o755


def test_copy_to_stdout(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"to stdout")
    r = run_agent_bytes("copy", "change", str(src), "-")
    assert (r.returncode, r.stdout) == (0, b"to stdout")
    assert run_agent_bytes("copy", "check", str(src), "-").returncode == 2


def test_copy_from_http_sends_fragment_headers(tmp_path: Path, http_base: str) -> None:
    dst = tmp_path / "dst"
    url = f"{http_base}/data#X-Token:s3cret\r\nX-Other: two"
    assert run_agent_bytes("copy", "check", url, str(dst)).returncode == 1
    r = run_agent_bytes("copy", "change", url, str(dst))
    assert r.returncode == 0, r.stderr
    assert dst.read_bytes() == b"remote contents\n"
    assert run_agent_bytes("copy", "check", url, str(dst)).returncode == 0
    r = run_agent_bytes("copy", "change", url, "-")
    assert r.stdout == b"remote contents\n"


def test_copy_from_url_gives_the_destination_0644(tmp_path: Path, http_base: str) -> None:
    dst = tmp_path / "dst"
    url = f"{http_base}/data#X-Token:s3cret\r\nX-Other: two"
    dst.write_bytes(b"remote contents\n")
    dst.chmod(0o600)
    assert run_agent_bytes("copy", "check", url, str(dst)).returncode == 1
    assert run_agent_bytes("copy", "change", url, str(dst)).returncode == 0
    assert mode_of(dst) == 0o644


def test_copy_http_error_names_status_without_header_values(tmp_path: Path, http_base: str) -> None:
    dst = tmp_path / "dst"
    r = run_agent_bytes("copy", "change", f"{http_base}/data#X-Token:wrong-secret", str(dst))
    assert r.returncode == 1
    line = one_line(r.stderr)
    assert "403" in line
    assert "wrong-secret" not in line
    r = run_agent_bytes("copy", "change", f"{http_base}/missing", str(dst))
    assert "404" in one_line(r.stderr)
    assert not dst.exists()


def test_copy_missing_local_source_is_an_error(tmp_path: Path) -> None:
    r = run_agent_bytes("copy", "change", str(tmp_path / "nope"), str(tmp_path / "dst"))
    assert r.returncode == 1
    assert "cannot read" in one_line(r.stderr)


# ---------------------------------------------------------------------------------------- line


def test_line_replaces_match_expanding_groups_and_check_passes_after(tmp_path: Path) -> None:
    target = tmp_path / "sshd_config"
    target.write_text("#LoginGraceTime 2m\n#PermitRootLogin prohibit-password\n#StrictModes yes\n")
    args = (str(target), r"^#?(PermitRootLogin) .*$", "${1} no")
    r = run_agent_bytes("line", "check", *args)
    assert r.returncode == 1
    assert "replacement not present" in one_line(r.stderr)
    assert run_agent_bytes("line", "change", *args).returncode == 0
    assert target.read_text() == "#LoginGraceTime 2m\nPermitRootLogin no\n#StrictModes yes\n"
    assert run_agent_bytes("line", "check", *args).returncode == 0
    assert run_agent_bytes("line", "change", *args).returncode == 0
    assert target.read_text() == "#LoginGraceTime 2m\nPermitRootLogin no\n#StrictModes yes\n"


def test_line_appends_when_nothing_matches_once(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    target.write_text("a=1\nb=2")  # no trailing newline
    args = (str(target), r"^c=.*", "c=$$3")
    assert run_agent_bytes("line", "change", *args).returncode == 0
    assert target.read_text() == "a=1\nb=2\nc=$3\n"
    assert run_agent_bytes("line", "check", *args).returncode == 0
    assert run_agent_bytes("line", "change", *args).returncode == 0
    assert target.read_text() == "a=1\nb=2\nc=$3\n"


def test_line_keeps_file_mode(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    target.write_text("x=1\n")
    target.chmod(0o600)
    assert run_agent_bytes("line", "change", str(target), "^x=.*", "x=2").returncode == 0
    assert (target.read_text(), mode_of(target)) == ("x=2\n", 0o600)


def test_line_remove_deletes_the_lines_change_wrote_and_check_fails_after(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    target.write_text("keep\nPermitRootLogin no\nkeep2\n")
    args = (str(target), "^#?(PermitRootLogin) .*$", "${1} no")
    assert run_agent_bytes("line", "check", *args).returncode == 0
    assert run_agent_bytes("line", "remove", *args).returncode == 0
    assert target.read_text() == "keep\nkeep2\n"
    assert run_agent_bytes("line", "check", *args).returncode == 1
    appended = (str(target), "^c=.*", "c=2")
    assert run_agent_bytes("line", "change", *appended).returncode == 0
    assert run_agent_bytes("line", "remove", *appended).returncode == 0
    assert target.read_text() == "keep\nkeep2\n"
    assert run_agent_bytes("line", "remove", str(tmp_path / "absent"), "x", "y").returncode == 0
    assert not (tmp_path / "absent").exists()


def test_line_remove_keeps_lines_the_pattern_did_not_write(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    text = "c=1\n# c=2 is the default\nc=2 # tuned by hand\nc=2\n"
    target.write_text(text)
    assert run_agent_bytes("line", "remove", str(target), "c=.*", "c=2").returncode == 0
    # c=1: change would rewrite it; the comment and the tuned line only contain a match.
    assert target.read_text() == "c=1\n# c=2 is the default\nc=2 # tuned by hand\n"


def test_line_missing_file_check_fails_and_change_creates_it(tmp_path: Path) -> None:
    target = tmp_path / "new"
    assert "does not exist" in one_line(
        run_agent_bytes("line", "check", str(target), "^a", "a=1").stderr
    )
    assert run_agent_bytes("line", "change", str(target), "^a", "a=1").returncode == 0
    assert target.read_text() == "a=1\n"


def test_line_on_stdin_prints_result_and_checks(tmp_path: Path) -> None:
    text = b"hello\nworld\n"
    r = run_agent_bytes("line", "change", "-", "^(w)orld$", "${1}ide", stdin=text)
    assert (r.returncode, r.stdout) == (0, b"hello\nwide\n")
    assert run_agent_bytes("line", "check", "-", "^(w)orld$", "${1}ide", stdin=text).returncode == 1
    assert run_agent_bytes("line", "check", "-", "^wide$", "wide", stdin=b"wide\n").returncode == 0
    r = run_agent_bytes("line", "remove", "-", "^world$", "world", stdin=text)
    assert r.stdout == b"hello\n"


def test_line_invalid_regexp_is_an_error(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x\n")
    r = run_agent_bytes("line", "change", str(target), "[1", "y")
    assert r.returncode == 1
    assert "valid regexp" in one_line(r.stderr)
    assert target.read_text() == "x\n"


# ---------------------------------------------------------------------------------------- link


def test_link_change_creates_symlink_and_check_passes(tmp_path: Path) -> None:
    dst = tmp_path / "ln"
    r = run_agent_bytes("link", "check", "/etc/hostname", str(dst))
    assert r.returncode == 1
    assert "does not exist" in one_line(r.stderr)
    assert run_agent_bytes("link", "change", "/etc/hostname", str(dst)).returncode == 0
    assert os.readlink(dst) == "/etc/hostname"
    assert run_agent_bytes("link", "check", "/etc/hostname", str(dst)).returncode == 0
    assert run_agent_bytes("link", "change", "/etc/hostname", str(dst)).returncode == 0


def test_link_check_reports_wrong_target_and_change_repoints(tmp_path: Path) -> None:
    dst = tmp_path / "ln"
    dst.symlink_to("old-target")
    r = run_agent_bytes("link", "check", "new-target", str(dst))
    assert r.returncode == 1
    assert "points to old-target, expected new-target" in one_line(r.stderr)
    assert run_agent_bytes("link", "change", "new-target", str(dst)).returncode == 0
    assert os.readlink(dst) == "new-target"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ln"]


def test_link_change_replaces_regular_file(tmp_path: Path) -> None:
    dst = tmp_path / "ln"
    dst.write_text("file")
    assert "expected a symlink" in one_line(run_agent_bytes("link", "check", "t", str(dst)).stderr)
    assert run_agent_bytes("link", "change", "t", str(dst)).returncode == 0
    assert os.readlink(dst) == "t"


def test_link_remove_deletes_the_symlink_keeps_its_target_and_succeeds_when_absent(
    tmp_path: Path,
) -> None:
    target = tmp_path / "t"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "f").write_text("data")
    dst = tmp_path / "ln"
    dst.symlink_to(target)
    assert run_agent_bytes("link", "remove", str(target), str(dst)).returncode == 0
    assert not dst.is_symlink()
    assert (target / "sub" / "f").read_text() == "data"
    assert run_agent_bytes("link", "remove", str(target), str(dst)).returncode == 0


def test_link_remove_refuses_a_regular_file_or_directory_in_place_of_the_link(
    tmp_path: Path,
) -> None:
    dst = tmp_path / "ln"
    dst.write_text("regular")
    r = run_agent_bytes("link", "remove", "t", str(dst))
    assert r.returncode == 1
    assert one_line(r.stderr).endswith(
        f"{dst}: expected a symlink to t, got a regular file; nothing was removed"
    )
    assert dst.read_text() == "regular"
    dst.unlink()
    dst.mkdir()
    (dst / "f").write_text("x")
    r = run_agent_bytes("link", "remove", "t", str(dst))
    assert r.returncode == 1
    assert "expected a symlink to t, got a directory; nothing was removed" in one_line(r.stderr)
    assert (dst / "f").read_text() == "x"


def test_link_remove_refuses_a_symlink_to_another_target(tmp_path: Path) -> None:
    dst = tmp_path / "ln"
    dst.symlink_to("elsewhere")
    r = run_agent_bytes("link", "remove", "t", str(dst))
    assert r.returncode == 1
    assert "expected a symlink to t, got a symlink to elsewhere" in one_line(r.stderr)
    assert os.readlink(dst) == "elsewhere"
