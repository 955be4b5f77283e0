"""``agent.core.which.which`` answers exactly as ``shutil.which`` on POSIX (property test)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.which import which

#: Kinds of entry a directory may hold under the looked-up name.
KINDS = ("missing", "exec", "plain", "dir", "exec_link", "dangling_link")


def _make(directory: Path, name: str, kind: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    if kind == "exec":
        target.write_text("#!/bin/sh\n")
        target.chmod(0o755)
    elif kind == "plain":
        target.write_text("data\n")
        target.chmod(0o644)
    elif kind == "dir":
        target.mkdir()
    elif kind == "exec_link":
        real = directory / f".{name}.real"
        real.write_text("#!/bin/sh\n")
        real.chmod(0o755)
        target.symlink_to(real)
    elif kind == "dangling_link":
        target.symlink_to(directory / "nowhere")


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=0, max_size=4),
    order=st.lists(st.integers(min_value=0, max_value=4), max_size=6),
    extra=st.sampled_from(["", ":", "::", "/nonexistent"]),
    absolute=st.booleans(),
)
def test_which_matches_shutil_which(
    kinds: list[str], order: list[int], extra: str, absolute: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = [root / f"d{i}" for i in range(len(kinds))]
        for d, kind in zip(dirs, kinds, strict=True):
            _make(d, "prog", kind)
        entries = [str(dirs[i]) for i in order if i < len(dirs)]
        path = os.pathsep.join(entries) + extra
        cmd = str(dirs[0] / "prog") if absolute and dirs else "prog"
        assert which(cmd, path=path) == shutil.which(cmd, path=path)


@pytest.mark.parametrize("path", [None, ""])
def test_which_uses_path_from_the_environment_like_shutil(
    path: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _make(tmp_path, "prog", "exec")
    monkeypatch.setenv("PATH", str(tmp_path) if path is None else path)
    assert which("prog") == shutil.which("prog")
    assert which("sh") == shutil.which("sh")
