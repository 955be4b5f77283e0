"""Jsonnet evaluation, file-set collection (reference §2.6) and sandboxed rendering (§7.2)."""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

import _gojsonnet
import pytest

from agent.core.errors import RenderError
from agent.jsonnet import engine as jsonnet_mod
from agent.jsonnet.engine import evaluate_text
from agent.jsonnet.imports import collect_files, scan_imports
from agent.jsonnet.natives import NativeContext, Natives, make_natives
from agent.jsonnet.sandbox import render_files, resolve_in_files


def _natives() -> Natives:
    return make_natives(NativeContext())


def _write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


# -- evaluate_text ---------------------------------------------------------------------------


def test_evaluate_text_returns_json_value() -> None:
    assert evaluate_text("{a: 1 + 1, b: [true, null]}", "x.jsonnet") == {"a": 2, "b": [True, None]}


def test_evaluate_text_error_names_file_and_line() -> None:
    with pytest.raises(RenderError) as err:
        evaluate_text('{\n  a: 1,\n  b: error "boom",\n}', "/main.jsonnet")
    assert "/main.jsonnet:3" in str(err.value)
    assert "boom" in str(err.value)
    assert "\n" not in str(err.value)


def test_evaluate_text_syntax_error_names_file_and_line() -> None:
    with pytest.raises(RenderError) as err:
        evaluate_text("{\n a: 1,\n b: 1 +,\n}", "/p/main.jsonnet")
    assert "/p/main.jsonnet:3" in str(err.value)


def test_failing_import_callback_message_is_clean_every_time() -> None:
    # gojsonnet 0.22 garbles callback error texts; the agent must always give a clean message.
    def callback(directory: str, rel: str) -> tuple[str, bytes]:
        raise RenderError("couldn't find import nope.libsonnet")

    for _ in range(60):
        with pytest.raises(RenderError) as err:
            evaluate_text(
                'local x = import "nope.libsonnet";\nx', "/a/main.jsonnet", import_callback=callback
            )
        message = str(err.value)
        assert (
            "RUNTIME ERROR: couldn't find import nope.libsonnet from /a/main.jsonnet |" in message
        )
        assert message.isprintable()


def _poison_small_heap_chunks() -> None:
    """Leave freed malloc chunks full of 0xff bytes (not UTF-8) for the next small allocations.

    This is what a busy process (another user, another environment, earlier work) may hold: the
    binding's import error path reads past its message buffer into such bytes.
    """
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.malloc_usable_size.restype = ctypes.c_size_t
    libc.malloc_usable_size.argtypes = [ctypes.c_void_p]
    chunks = []
    for size in range(1, 80):
        for _ in range(16):
            chunk = libc.malloc(size)
            ctypes.memset(chunk, 0xFF, libc.malloc_usable_size(chunk))
            chunks.append(chunk)
    for chunk in chunks:
        libc.free(chunk)


def test_import_error_is_clean_when_the_heap_holds_non_utf8_bytes() -> None:
    # Root cause of "unknown error" for unprivileged users: the binding copied the callback's
    # error text without a NUL, go-jsonnet read on into the heap, and non-UTF-8 bytes there made
    # the binding raise an empty RuntimeError. Poisoning the heap reproduces it as any user.
    def callback(directory: str, rel: str) -> tuple[str, bytes]:
        _poison_small_heap_chunks()
        raise RenderError(f"couldn't find import {rel}: expected a file in the pattern")

    with pytest.raises(RenderError) as err:
        evaluate_text(
            "{\n  a: import 'nope.libsonnet',\n}", "/p/main.jsonnet", import_callback=callback
        )
    message = str(err.value)
    assert message.startswith(
        "error rendering /p/main.jsonnet: RUNTIME ERROR: couldn't find import nope.libsonnet "
        "from /p/main.jsonnet"
    ), message
    assert "/p/main.jsonnet:2" in message
    assert "unknown error" not in message and message.isprintable()


def test_import_guard_gives_the_binding_a_text_it_copies_safely() -> None:
    # A non-empty text would be read past its end (garbage, or a UnicodeDecodeError, or on
    # Python 3.11.2 an empty RuntimeError); an empty one is copied as NULL and read as "".
    def callback(directory: str, rel: str) -> tuple[str, bytes]:
        _poison_small_heap_chunks()
        raise RenderError(f"couldn't find import {rel}")

    guarded = jsonnet_mod._guard_import(callback, jsonnet_mod._Failure())
    with pytest.raises(RuntimeError) as err:
        _gojsonnet.evaluate_snippet("/m.jsonnet", "import 'x.libsonnet'", import_callback=guarded)
    assert type(err.value) is RuntimeError
    assert str(err.value).startswith("RUNTIME ERROR: importer error: \n\t/m.jsonnet:1:1-")


def test_engine_error_without_text_says_so() -> None:
    failure = jsonnet_mod._Failure()
    err = jsonnet_mod._render_error("/m.jsonnet", RuntimeError(), failure)
    assert err.message == (
        "error rendering /m.jsonnet: the Jsonnet engine reported an error without a message "
        "(expected a RUNTIME or STATIC ERROR text)"
    )


def test_failing_native_callback_message_reaches_the_error() -> None:
    def boom(value: str) -> str:
        raise ValueError(f"bad value {value}")

    with pytest.raises(RenderError) as err:
        evaluate_text(
            'std.native("boom")("x")', "/m.jsonnet", native_callbacks={"boom": (("value",), boom)}
        )
    assert "bad value x" in str(err.value)
    assert "/m.jsonnet:1" in str(err.value)


# -- scan_imports ----------------------------------------------------------------------------


def test_scan_imports_ignores_comments_and_strings() -> None:
    text = """
    // import 'comment1.libsonnet'
    # import 'comment2.libsonnet'
    /* import 'comment3.libsonnet' */
    local s = "import 'in-string.libsonnet'";
    local v = @'import "verbatim.libsonnet"';
    local b = |||
      import 'in-block.libsonnet'
    |||;
    local a = import 'a.libsonnet';
    local t = importstr "t.txt";
    local bin = importbin @'b''in.dat';
    local e = import "dir\\/\\u0065.libsonnet";
    {}
    """
    found = scan_imports(text)
    assert [(k, p) for k, p, _ in found] == [
        ("import", "a.libsonnet"),
        ("importstr", "t.txt"),
        ("importbin", "b'in.dat"),
        ("import", "dir/e.libsonnet"),
    ]
    assert found[0][2] == 10


def test_scan_imports_finds_imports_after_text_block_and_in_unevaluated_branches() -> None:
    text = "local x = |||-\n  a\n  b\n|||;\nif false then import 'never.libsonnet' else x"
    assert scan_imports(text) == [("import", "never.libsonnet", 5)]


# -- collect_files ---------------------------------------------------------------------------


def test_collect_files_keys_match_etcha_example(tmp_path: Path) -> None:
    entry = _write(
        tmp_path,
        "patterns/helloworld.jsonnet",
        "local n = import '../lib/etcha/native.libsonnet';\n{run: [], n: n}\n",
    )
    _write(tmp_path, "lib/etcha/native.libsonnet", "{getArch: std.native('getArch')}\n")
    entrypoint, files = collect_files(entry)
    assert entrypoint == "/patterns/helloworld.jsonnet"
    assert sorted(files) == ["/lib/etcha/native.libsonnet", "/patterns/helloworld.jsonnet"]
    assert files["/lib/etcha/native.libsonnet"] == "{getArch: std.native('getArch')}\n"


def test_collect_files_without_imports_gives_slash_file_name(tmp_path: Path) -> None:
    entry = _write(tmp_path, "main.jsonnet", "{a: 1}")
    assert collect_files(entry) == ("/main.jsonnet", {"/main.jsonnet": "{a: 1}"})


def test_collect_files_relative_entry_path_uses_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, "p/main.jsonnet", "{}")
    monkeypatch.chdir(tmp_path)
    assert collect_files(Path("p/main.jsonnet")) == ("/main.jsonnet", {"/main.jsonnet": "{}"})


def test_collect_files_base_matches_whole_path_components(tmp_path: Path) -> None:
    # Etcha's string-prefix test would treat .../b as the parent of .../bc and drop the slash.
    entry = _write(tmp_path, "a/b/main.jsonnet", "import '../bc/x.libsonnet'")
    _write(tmp_path, "a/bc/x.libsonnet", "{x: 1}")
    entrypoint, files = collect_files(entry)
    assert entrypoint == "/b/main.jsonnet"
    assert sorted(files) == ["/b/main.jsonnet", "/bc/x.libsonnet"]


def test_collect_files_follows_transitive_import_importstr_importbin(tmp_path: Path) -> None:
    entry = _write(
        tmp_path,
        "main.jsonnet",
        "local a = import 'lib/a.libsonnet';\n"
        "{a: a, s: importstr 'data/s.txt', b: importbin 'data/b.bin'}",
    )
    _write(tmp_path, "lib/a.libsonnet", "import 'b.libsonnet'")
    _write(tmp_path, "lib/b.libsonnet", "{deep: importstr '../data/deep.txt'}")
    _write(tmp_path, "data/deep.txt", "deep\n")
    # importstr targets are data, not Jsonnet: their "imports" are not followed.
    _write(tmp_path, "data/s.txt", "import 'not-a-real-import.libsonnet'  \n")
    (tmp_path / "data/b.bin").write_bytes(b"\x01\x02")
    entrypoint, files = collect_files(entry)
    assert entrypoint == "/main.jsonnet"
    assert sorted(files) == [
        "/data/b.bin",
        "/data/deep.txt",
        "/data/s.txt",
        "/lib/a.libsonnet",
        "/lib/b.libsonnet",
        "/main.jsonnet",
    ]
    assert files["/data/s.txt"] == "import 'not-a-real-import.libsonnet'  \n"  # raw, untrimmed


def test_collect_files_collects_imports_of_unevaluated_branches(tmp_path: Path) -> None:
    entry = _write(
        tmp_path,
        "main.jsonnet",
        "if std.native('getOS')() == 'plan9' then import 'p9.libsonnet' else {}",
    )
    _write(tmp_path, "p9.libsonnet", "{}")
    assert sorted(collect_files(entry)[1]) == ["/main.jsonnet", "/p9.libsonnet"]


def test_collect_files_falls_back_to_entry_directory(tmp_path: Path) -> None:
    entry = _write(tmp_path, "main.jsonnet", "import 'lib/sub/a.libsonnet'")
    _write(tmp_path, "lib/sub/a.libsonnet", "import 'lib/common.libsonnet'")
    _write(tmp_path, "lib/common.libsonnet", "{common: true}")
    entrypoint, files = collect_files(entry)
    assert sorted(files) == ["/lib/common.libsonnet", "/lib/sub/a.libsonnet", "/main.jsonnet"]
    assert render_files(entrypoint, files, natives=_natives()) == {"common": True}


def test_collect_files_missing_import_names_importer_and_import(tmp_path: Path) -> None:
    entry = _write(tmp_path, "main.jsonnet", "local a = import 'lib/a.libsonnet';\na")
    _write(tmp_path, "lib/a.libsonnet", "{}\n+ import 'missing.libsonnet'")
    with pytest.raises(RenderError) as err:
        collect_files(entry)
    message = str(err.value)
    assert "missing.libsonnet" in message
    assert f"{tmp_path}/lib/a.libsonnet:2" in message


def test_collect_files_directory_where_an_import_file_is_expected_names_file_and_os_error(
    tmp_path: Path,
) -> None:
    # Fails the same way for root: permissions are not what makes a directory unreadable.
    entry = _write(tmp_path, "main.jsonnet", "\nlocal a = import 'conf.libsonnet';\na")
    (tmp_path / "conf.libsonnet").mkdir()
    with pytest.raises(RenderError) as err:
        collect_files(entry)
    assert err.value.message == (
        f"error reading import conf.libsonnet from {entry}:2: "
        "expected a readable file, got Is a directory"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_collect_files_unreadable_import_names_file_and_os_error(tmp_path: Path) -> None:
    entry = _write(tmp_path, "main.jsonnet", "import 'secret.libsonnet'")
    _write(tmp_path, "secret.libsonnet", "{}").chmod(0)
    with pytest.raises(RenderError) as err:
        collect_files(entry)
    assert err.value.message == (
        f"error reading import secret.libsonnet from {entry}:1: "
        "expected a readable file, got Permission denied"
    )


def test_collect_files_resolves_etcha_imports_to_the_packaged_library(tmp_path: Path) -> None:
    from importlib import resources

    entry = _write(
        tmp_path,
        "patterns/p.jsonnet",
        "local etcha = import 'etcha/etcha.libsonnet';\n{run: [etcha.dir(path='/srv')]}",
    )
    entrypoint, files = collect_files(entry)
    lib = resources.files("agent").joinpath("lib", "etcha")
    assert entrypoint == "/p.jsonnet"
    assert files["/etcha/etcha.libsonnet"] == lib.joinpath("etcha.libsonnet").read_text()
    assert "/etcha/helpers.libsonnet" in files  # imported by the library itself
    out = render_files(entrypoint, files, natives=_natives())
    assert [c["id"] for c in out["run"]] == ["dir /srv"]


def test_collect_files_prefers_an_etcha_directory_on_disk(tmp_path: Path) -> None:
    entry = _write(tmp_path, "p.jsonnet", "import 'etcha/etcha.libsonnet'")
    _write(tmp_path, "etcha/etcha.libsonnet", "{mine: true}")
    entrypoint, files = collect_files(entry)
    assert files == {
        "/p.jsonnet": "import 'etcha/etcha.libsonnet'",
        "/etcha/etcha.libsonnet": "{mine: true}",
    }
    assert render_files(entrypoint, files, natives=_natives()) == {"mine": True}


def test_collect_files_unknown_library_file_names_import_and_importer(tmp_path: Path) -> None:
    entry = _write(tmp_path, "p.jsonnet", "\nimport 'etcha/nope.libsonnet'")
    with pytest.raises(RenderError) as err:
        collect_files(entry)
    assert err.value.message.startswith(
        f"couldn't find import etcha/nope.libsonnet from {entry}:2: expected a file relative to "
        "the importer or the pattern directory, or a file of the standard library (etcha/*)"
    )


def test_collect_files_refuses_a_disk_file_and_the_library_under_one_key(tmp_path: Path) -> None:
    entry = _write(
        tmp_path,
        "patterns/p.jsonnet",
        "[import 'etcha/etcha.libsonnet', import '../etcha/etcha.libsonnet']",
    )
    _write(tmp_path, "etcha/etcha.libsonnet", "{mine: true}")
    with pytest.raises(RenderError, match=r"would both be stored as /etcha/etcha\.libsonnet"):
        collect_files(entry)


def test_collect_files_missing_entry_is_render_error(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"nope\.jsonnet"):
        collect_files(tmp_path / "nope.jsonnet")


def test_collected_files_render_like_the_bare_engine(tmp_path: Path) -> None:
    entry = _write(
        tmp_path,
        "patterns/p.jsonnet",
        "local lib = import '../lib/x.libsonnet';\n{v: lib.v, s: importstr '../lib/s.txt', "
        "b: importbin '../lib/s.txt'}",
    )
    _write(tmp_path, "lib/x.libsonnet", "{v: [1, 2, 'x']}")
    _write(tmp_path, "lib/s.txt", "hé")
    entrypoint, files = collect_files(entry)
    expected = json.loads(_gojsonnet.evaluate_file(str(entry)))
    assert render_files(entrypoint, files, natives=_natives()) == expected


# -- render_files ----------------------------------------------------------------------------


def test_render_files_entry_without_leading_slash() -> None:
    files = {"main.jsonnet": "local l = import 'lib.libsonnet'; {l: l}", "lib.libsonnet": "{x: 1}"}
    assert render_files("main.jsonnet", files, natives=_natives()) == {"l": {"x": 1}}


def test_render_files_resolves_relative_to_importer_directory() -> None:
    files = {
        "/patterns/x.jsonnet": "import '../lib/a.libsonnet'",
        "/lib/a.libsonnet": "{a: importstr 'b.txt'}",
        "/lib/b.txt": "B",
    }
    assert render_files("/patterns/x.jsonnet", files, natives=_natives()) == {"a": "B"}


def test_render_files_strips_leading_segments_when_not_found() -> None:
    files = {"/main.jsonnet": "import '/home/user/lib/c.libsonnet'", "/lib/c.libsonnet": "{c: 3}"}
    assert render_files("/main.jsonnet", files, natives=_natives()) == {"c": 3}


def test_render_files_importbin_gives_bytes() -> None:
    files = {"/main.jsonnet": "importbin 'd.bin'", "/d.bin": "AB"}
    assert render_files("/main.jsonnet", files, natives=_natives()) == [65, 66]


def test_render_files_error_names_file_and_line() -> None:
    files = {
        "/main.jsonnet": "local l = import 'lib.libsonnet';\n{\n  a: l.missing,\n}",
        "/lib.libsonnet": "{}",
    }
    with pytest.raises(RenderError) as err:
        render_files("/main.jsonnet", files, natives=_natives())
    assert "/main.jsonnet:3" in str(err.value)


def test_render_files_error_in_import_names_that_file() -> None:
    files = {
        "/main.jsonnet": "import 'lib/l.libsonnet'",
        "/lib/l.libsonnet": "{\n a: error 'bad lib'\n}",
    }
    with pytest.raises(RenderError) as err:
        render_files("/main.jsonnet", files, natives=_natives())
    assert "/lib/l.libsonnet:2" in str(err.value)
    assert "bad lib" in str(err.value)


def test_render_files_unknown_entrypoint_is_render_error() -> None:
    with pytest.raises(RenderError, match="entrypoint"):
        render_files("/other.jsonnet", {"/main.jsonnet": "{}"}, natives=_natives())


def test_render_files_missing_import_names_import_and_importer() -> None:
    files = {"/p/main.jsonnet": "{\n a: import 'nope.libsonnet',\n}"}
    with pytest.raises(RenderError) as err:
        render_files("/p/main.jsonnet", files, natives=_natives())
    message = str(err.value)
    assert "couldn't find import nope.libsonnet from /p/main.jsonnet" in message
    assert "/p/main.jsonnet:2" in message


@pytest.mark.parametrize("keyword", ["import", "importstr", "importbin"])
@pytest.mark.parametrize(
    "target",
    [
        "/etc/passwd",
        "../../../../etc/passwd",
        "/proc/self/environ",
        "//etc/passwd",
        "lib/../../../../etc/hostname",
        "/etc/hostname",
    ],
)
def test_hostile_file_set_cannot_read_the_disk(keyword: str, target: str) -> None:
    assert Path("/etc/passwd").is_file()
    assert Path("/proc/self/environ").exists()
    # A token-like file set: the attacker controls every file name and content.
    files = {
        "/main.jsonnet": "local lib = import 'lib/x.libsonnet';\n{out: lib.steal}",
        "/lib/x.libsonnet": f"{{steal: {keyword} '{target}'}}",
    }
    with pytest.raises(RenderError) as err:
        render_files("/main.jsonnet", files, natives=_natives())
    assert f"couldn't find import {target}" in str(err.value)
    assert "root:" not in str(err.value)


def test_hostile_render_native_cannot_read_the_disk() -> None:
    files = {"/main.jsonnet": "std.native('render')(\"importstr '/etc/passwd'\")"}
    with pytest.raises(RenderError) as err:
        render_files("/main.jsonnet", files, natives=_natives())
    assert "couldn't find import /etc/passwd" in str(err.value)


def test_hostile_dotdot_resolves_inside_the_set_only() -> None:
    # "../../../../etc/passwd" cleans to "/etc/passwd": it reads the *set's* file of that name.
    files = {"/main.jsonnet": "importstr '../../../../etc/passwd'", "/etc/passwd": "from the set"}
    assert render_files("/main.jsonnet", files, natives=_natives()) == "from the set"


def test_resolve_in_files_never_returns_a_path_outside_the_set() -> None:
    files = {"/a/b.libsonnet": ""}
    assert resolve_in_files(files, "/a/", "../../../x") is None
    assert resolve_in_files(files, "/x/y/", "../../a/b.libsonnet") == "/a/b.libsonnet"
    assert resolve_in_files(files, "", "a/b.libsonnet") == "/a/b.libsonnet"
    assert resolve_in_files(files, "/", "") is None


def test_render_files_does_not_touch_the_disk_for_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, "lib.libsonnet", "{on: 'disk'}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RenderError, match=r"couldn't find import lib\.libsonnet"):
        render_files("main.jsonnet", {"main.jsonnet": "import 'lib.libsonnet'"}, natives=_natives())
