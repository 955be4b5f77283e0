"""``agent.core.paths`` shows paths exactly as ``pathlib`` does (the render and config paths use
it in place of ``pathlib``, issue 14)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from hypothesis import given
from hypothesis import strategies as st

from agent.core.paths import directories_up, is_file, join_text, path_text

_SEGMENTS = st.lists(st.sampled_from(["", ".", "..", "a", "b.c", ".d", "é"]), max_size=6)


@given(_SEGMENTS, st.integers(min_value=0, max_value=4), st.booleans())
def test_path_text_is_pathlibs(parts: list[str], slashes: int, trailing: bool) -> None:
    text = "/" * slashes + "/".join(parts) + ("/" if trailing else "")
    assert path_text(text) == str(PurePosixPath(text))


@given(_SEGMENTS, st.integers(min_value=0, max_value=2), _SEGMENTS)
def test_join_text_and_directories_up_are_pathlibs(
    base_parts: list[str], slashes: int, rel_parts: list[str]
) -> None:
    base = "/" * slashes + "/".join(base_parts)
    rel = "/".join(rel_parts)
    if not rel.startswith("/"):
        assert join_text(base, rel) == str(PurePosixPath(base) / rel)
    start = PurePosixPath(base)
    assert list(directories_up(base)) == [str(p) for p in (start, *start.parents)]


def test_known_paths() -> None:
    assert path_text("./client.json") == "client.json"
    assert path_text("") == "."
    assert path_text("//srv//x/") == "//srv/x"
    assert path_text("///srv") == "/srv"
    assert path_text(Path("/a/b")) == "/a/b"
    assert join_text("/", "x") == "/x"
    assert list(directories_up("/a/b")) == ["/a/b", "/a", "/"]


def test_is_file_answers_as_pathlib(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "to-f").symlink_to(tmp_path / "f")
    names = ["f", "d", "missing", "f/under-a-file", "loop", "to-f", "nul\0byte", "f/"]
    for name in names:
        path = f"{tmp_path}/{name}"
        assert is_file(path) is Path(path).is_file(), name
    assert is_file(tmp_path / "f") is True  # a PathLike too
