"""The filesystem primitives of the helper commands (:mod:`agent.tools.helpers.fs` and
:mod:`agent.tools.helpers.link`) called in-process on real files in a temporary directory."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import pytest

from agent.core.errors import CommandError, UsageError
from agent.tools.helpers.fs import (
    Ownership,
    apply_ownership,
    chown_error,
    fsync_dir,
    lstat_or_none,
    ownership,
    ownership_mismatch,
    parse_perms,
    read_file,
    resolve_group,
    resolve_owner,
    write_atomic,
)
from agent.tools.helpers.link import change_link, check_link, remove_link


@pytest.mark.parametrize(
    ("text", "message"),
    [("0x1", "expected an octal number like 0644"), ("17777", "between 0 and 07777")],
)
def test_perms_outside_octal_0_to_07777_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_perms(text, 0o644)


def test_perms_default_applies_only_when_no_value_is_given() -> None:
    assert parse_perms("", 0o644) == 0o644
    assert parse_perms(None, None) is None
    assert parse_perms("0", 0o644) == 0


def test_groups_resolve_by_name_or_number_and_an_unknown_name_is_an_error() -> None:
    root_group = grp.getgrgid(0).gr_name
    assert resolve_group(root_group) == 0
    assert resolve_group("4242") == 4242
    assert resolve_group("") is None
    with pytest.raises(CommandError, match="unknown group 'no-such-group-xyz'"):
        resolve_group("no-such-group-xyz")
    assert ownership("", root_group, "600", None) == Ownership(0o600, None, 0)


def test_owners_resolve_by_name_or_number_and_an_unknown_name_is_an_error() -> None:
    assert resolve_owner("root") == 0
    assert resolve_owner("4242") == 4242
    assert resolve_owner(None) is None
    with pytest.raises(CommandError, match="unknown user 'no-such-user-xyz'"):
        resolve_owner("no-such-user-xyz")


def test_apply_ownership_sets_the_mode_and_leaves_an_owner_already_right(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    os.chmod(path, 0o644)
    st = path.stat()
    apply_ownership(path, Ownership(0o600, st.st_uid, st.st_gid))
    after = path.stat()
    assert stat.S_IMODE(after.st_mode) == 0o600
    assert (after.st_uid, after.st_gid) == (st.st_uid, st.st_gid)


def test_a_path_under_a_regular_file_cannot_be_stat_ed(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert lstat_or_none(tmp_path / "missing") is None
    with pytest.raises(CommandError, match="cannot stat"):
        lstat_or_none(tmp_path / "f" / "below")


def test_ownership_mismatch_names_mode_then_owner_then_group(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    os.chmod(path, 0o640)
    st = path.stat()
    assert ownership_mismatch(st, Ownership(0o640, st.st_uid, st.st_gid)) is None
    assert ownership_mismatch(st, Ownership(0o600)) == "permissions are 0640, expected 0600"
    assert ownership_mismatch(st, Ownership(uid=st.st_uid + 1)) == (
        f"owner uid is {st.st_uid}, expected {st.st_uid + 1}"
    )
    assert ownership_mismatch(st, Ownership(gid=st.st_gid + 1)) == (
        f"group gid is {st.st_gid}, expected {st.st_gid + 1}"
    )


def test_a_chown_error_names_the_wanted_owner_and_group(tmp_path: Path) -> None:
    error = chown_error(tmp_path, Ownership(uid=7), PermissionError(1, "Operation not permitted"))
    assert str(error).startswith(f"{tmp_path}: cannot set owner to 7:: Operation not permitted")
    error = chown_error(tmp_path, Ownership(gid=8), PermissionError(1, "Operation not permitted"))
    assert f"{tmp_path}: cannot set owner to :8: Operation not permitted" in str(error)


def test_fsync_of_a_missing_directory_is_silently_skipped(tmp_path: Path) -> None:
    fsync_dir(tmp_path / "missing")  # best effort: no error
    assert not (tmp_path / "missing").exists()


def test_write_atomic_keeps_an_existing_mode_and_refuses_a_directory_target(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    path.write_text("old")
    os.chmod(path, 0o600)
    write_atomic(path, b"new", Ownership())
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (tmp_path / "d").mkdir()
    with pytest.raises(CommandError, match="cannot write"):
        write_atomic(tmp_path / "d", b"x", Ownership())
    assert (tmp_path / "d").is_dir()
    with pytest.raises(CommandError, match="expected an existing parent directory"):
        write_atomic(tmp_path / "no" / "f", b"x", Ownership())


def test_read_file_refuses_more_than_its_bound_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    assert read_file(path, max_bytes=5) == b"12345"
    with pytest.raises(CommandError, match="expected at most 4 bytes, got more"):
        read_file(path, max_bytes=4)
    with pytest.raises(CommandError, match="cannot read"):
        read_file(tmp_path / "missing")


def test_change_link_replaces_an_empty_directory_but_not_a_full_one(tmp_path: Path) -> None:
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    (full / "keep").write_text("x")
    assert check_link("target", empty) == "expected a symlink, got a directory"
    assert change_link("target", empty) is True
    assert os.readlink(empty) == "target"
    assert change_link("target", empty) is False  # already right: nothing done
    with pytest.raises(CommandError, match="got a directory that cannot be replaced"):
        change_link("target", full)
    assert (full / "keep").read_text() == "x"


def test_change_link_replaces_a_link_elsewhere_and_reports_a_missing_parent(
    tmp_path: Path,
) -> None:
    link = tmp_path / "l"
    link.symlink_to("elsewhere")
    assert check_link("target", link) == "symlink points to elsewhere, expected target"
    assert change_link("target", link) is True
    assert os.readlink(link) == "target"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l"]  # no temp file left
    with pytest.raises(CommandError, match="cannot create symlink"):
        change_link("target", tmp_path / "missing" / "l")


def test_remove_link_removes_only_a_symlink_to_its_source(tmp_path: Path) -> None:
    link, plain = tmp_path / "l", tmp_path / "plain"
    link.symlink_to("elsewhere")
    plain.write_text("x")
    assert remove_link("target", tmp_path / "missing") is False
    with pytest.raises(CommandError, match="got a symlink to elsewhere; nothing was removed"):
        remove_link("target", link)
    with pytest.raises(CommandError, match="got a regular file; nothing was removed"):
        remove_link("target", plain)
    assert link.is_symlink() and plain.read_text() == "x"
    link.unlink()
    link.symlink_to("target")
    assert remove_link("target", link) is True
    assert not link.is_symlink()
