"""agent.core.atomicio.atomic_write_many: several files of one directory, one directory fsync."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.core.atomicio import atomic_write_many, is_temp_name


def test_every_file_is_written_with_its_mode_and_one_directory_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").write_text("old a")
    synced: list[bool] = []
    real = os.fsync

    def counting(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    atomic_write_many([(tmp_path / "a", b"new a"), (tmp_path / "b", "new b")], mode=0o640)
    assert (tmp_path / "a").read_text() == "new a" and (tmp_path / "b").read_text() == "new b"
    assert {stat.S_IMODE((tmp_path / n).stat().st_mode) for n in "ab"} == {0o640}
    assert synced == [False, False, True]  # each file, then the directory once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_a_failure_before_the_renames_changes_nothing_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").write_text("old a")
    (tmp_path / "b").write_text("old b")
    real = os.fchmod
    calls = [0]

    def second_fails(fd: int, mode: int) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(28, "No space left on device")
        real(fd, mode)

    monkeypatch.setattr(os, "fchmod", second_fails)
    with pytest.raises(OSError, match="No space"):
        atomic_write_many([(tmp_path / "a", b"new a"), (tmp_path / "b", b"new b")])
    assert (tmp_path / "a").read_text() == "old a" and (tmp_path / "b").read_text() == "old b"
    assert not [p for p in tmp_path.iterdir() if is_temp_name(p.name)]


def test_paths_in_different_directories_are_refused(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="expected paths in"):
        atomic_write_many([(tmp_path / "a", b"a"), (tmp_path / "sub" / "b", b"b")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]
