"""StateStore files on disk and the ReplayCache bounds."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
from support import REPO

from agent.config.schema import config_from_dict
from agent.core.atomicio import atomic_write
from agent.core.errors import SourceError
from agent.daemon.state import ReplayCache, SourceMeta, StateStore, StoredState
from agent.jws.keys import generate_keys, parse_signing_key
from agent.jws.tokens import sign_token
from agent.trust.gate import AdmittedToken, Context, TrustGate

_PRIVATE, _PUBLIC = generate_keys("ed25519", "state")


def admitted(iat: int = 1, **claims: object) -> AdmittedToken:
    """A real token admitted by the gate (the store takes nothing else)."""
    raw = sign_token({"iat": iat, **claims}, parse_signing_key(_PRIVATE))
    gate = TrustGate(config_from_dict({"run": {"verifyKeys": [_PUBLIC]}}))
    return asyncio.run(gate.admit(raw, "", Context.RESTORE))


ADMITTED = admitted()
TOKEN = ADMITTED.raw


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_then_load_round_trips_token_and_meta(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    meta = SourceMeta(
        etag='"abc"',
        last_modified="Wed, 21 Oct 2015 07:28:00 GMT",
        high_water_iat=1700000000,
        accepted_at=1700000123.5,
    )
    store.save("web", ADMITTED, meta)
    assert store.load("web") == StoredState(token=TOKEN, meta=meta)


def test_token_is_written_at_the_etcha_location_as_the_raw_token(tmp_path: Path) -> None:
    StateStore(tmp_path).save("web", ADMITTED, SourceMeta())
    assert (tmp_path / "web.jwt").read_text() == TOKEN
    data = json.loads((tmp_path / "web.meta.json").read_text())
    assert data["etag"] == ""
    assert data["high_water_iat"] is None


def test_saved_files_are_private(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    old = os.umask(0)
    try:
        store.save("web", ADMITTED, SourceMeta(etag="x"))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "web.jwt") == 0o600
    assert _mode(tmp_path / "web.meta.json") == 0o600


def test_save_creates_missing_state_dir(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "a" / "b")
    store.save("web", ADMITTED, SourceMeta())
    assert (tmp_path / "a" / "b" / "web.jwt").exists()


def test_save_leaves_no_temp_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    tokens = [admitted(i + 1) for i in range(3)]
    for i, token in enumerate(tokens):
        store.save("web", token, SourceMeta(etag=str(i)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web.jwt", "web.meta.json"]
    assert (tmp_path / "web.jwt").read_text() == tokens[2].raw


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "web.jwt"
    target.write_text("old")
    # A directory at a path that the temp file would need to replace makes os.replace fail.
    blocker = tmp_path / "dir.jwt"
    blocker.mkdir()
    (blocker / "inside").write_text("x")
    with pytest.raises(OSError):
        atomic_write(blocker, b"new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.jwt", "web.jwt"]


def test_save_into_unwritable_location_is_a_source_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(SourceError, match="state dir"):
        StateStore(blocker / "state").save("web", ADMITTED, SourceMeta())


def test_load_without_token_is_none(tmp_path: Path) -> None:
    assert StateStore(tmp_path).load("web") is None
    assert StateStore(tmp_path / "missing").load("web") is None


def test_load_empty_token_file_is_none(tmp_path: Path) -> None:
    (tmp_path / "web.jwt").write_text("\n")
    assert StateStore(tmp_path).load("web") is None


def test_token_written_by_etcha_without_meta_loads_with_default_meta(tmp_path: Path) -> None:
    (tmp_path / "web.jwt").write_text(TOKEN + "\n")
    assert StateStore(tmp_path).load("web") == StoredState(token=TOKEN, meta=SourceMeta())


def test_malformed_meta_defaults_and_keeps_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "web.jwt").write_text(TOKEN)
    (tmp_path / "web.meta.json").write_text("{not json")
    state = StateStore(tmp_path).load("web")
    assert state == StoredState(token=TOKEN, meta=SourceMeta())
    assert "malformed state metadata" in caplog.text


def test_meta_with_wrong_types_ignores_those_fields(tmp_path: Path) -> None:
    (tmp_path / "web.jwt").write_text(TOKEN)
    (tmp_path / "web.meta.json").write_text(
        json.dumps({"etag": 5, "last_modified": "x", "high_water_iat": True, "accepted_at": "y"})
    )
    state = StateStore(tmp_path).load("web")
    assert state is not None
    assert state.meta == SourceMeta(last_modified="x")


def test_save_meta_updates_meta_without_touching_token(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save("web", ADMITTED, SourceMeta(etag="1", high_water_iat=5))
    before = (tmp_path / "web.jwt").stat()
    store.save_meta("web", SourceMeta(etag="2", high_water_iat=5))
    after = (tmp_path / "web.jwt").stat()
    assert before.st_ino == after.st_ino
    assert before.st_mtime_ns == after.st_mtime_ns
    assert store.load("web") == StoredState(TOKEN, SourceMeta(etag="2", high_water_iat=5))


def test_save_meta_without_token_loads_as_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_meta("web", SourceMeta(etag="1"))
    assert store.load("web") is None
    assert (tmp_path / "web.meta.json").exists()


@pytest.mark.parametrize("name", ["", "a/b", "..", "../x", "a..b", ".", "a\0b", "x" * 201])
def test_unsafe_source_names_are_rejected(tmp_path: Path, name: str) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(SourceError, match="source name"):
        store.save(name, ADMITTED, SourceMeta())
    with pytest.raises(SourceError, match="source name"):
        store.load(name)
    with pytest.raises(SourceError, match="source name"):
        store.save_meta(name, SourceMeta())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["web", "my-source_1", "a.b", "test"])
def test_safe_source_names_are_accepted(tmp_path: Path, name: str) -> None:
    store = StateStore(tmp_path)
    store.save(name, ADMITTED, SourceMeta())
    assert (tmp_path / f"{name}.jwt").exists()


def test_unreadable_token_file_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "web.jwt").mkdir()
    with pytest.raises(SourceError, match="expected a readable file"):
        StateStore(tmp_path).load("web")


def test_meta_dataclasses_are_frozen() -> None:
    meta = SourceMeta()
    with pytest.raises(AttributeError):
        meta.etag = "x"  # type: ignore[misc]


# ReplayCache


def test_replay_cache_refuses_a_jti_seen_before() -> None:
    cache = ReplayCache(10, clock=lambda: 1000.0)
    assert cache.remember("a", 2000) is True
    assert cache.remember("a", 2000) is False
    assert cache.remember("b", 2000) is True


def test_replay_cache_forgets_jti_after_expiry_plus_leeway() -> None:
    now = [1000.0]
    cache = ReplayCache(10, leeway=30, clock=lambda: now[0])
    assert cache.remember("a", 1100)
    now[0] = 1129.0
    assert cache.remember("a", 1100) is False
    now[0] = 1130.0
    assert len(cache) == 1
    assert "a" not in cache
    assert cache.remember("a", 1200) is True


def test_replay_cache_expired_entries_are_dropped_as_time_passes() -> None:
    now = [0.0]
    cache = ReplayCache(1000, leeway=0, clock=lambda: now[0])
    for i in range(100):
        cache.remember(f"j{i}", 10 + i)
    now[0] = 60.0
    cache.remember("new", 1000)
    assert len(cache) == 50  # j50..j99 (exp 60 is expired) + new


def test_replay_cache_token_already_past_its_window_is_not_stored() -> None:
    cache = ReplayCache(10, leeway=30, clock=lambda: 1000.0)
    assert cache.remember("old", 900) is True
    assert len(cache) == 0


def test_replay_cache_evicts_expired_before_oldest_when_full() -> None:
    now = [0.0]
    cache = ReplayCache(3, leeway=0, clock=lambda: now[0])
    cache.remember("long", 1000)
    cache.remember("short", 5)
    cache.remember("long2", 1000)
    now[0] = 10.0
    cache.remember("d", 1000)
    assert "long" in cache
    assert "long2" in cache
    assert "d" in cache
    assert cache.remember("long", 1000) is False


def test_replay_cache_evicts_oldest_when_full_of_live_entries() -> None:
    cache = ReplayCache(3, clock=lambda: 0.0)
    for jti in ("a", "b", "c", "d"):
        cache.remember(jti, 1000)
    assert "a" not in cache
    assert [j in cache for j in ("b", "c", "d")] == [True, True, True]


def test_replay_cache_jti_without_exp_is_kept_until_evicted() -> None:
    now = [0.0]
    cache = ReplayCache(2, clock=lambda: now[0])
    cache.remember("forever", None)
    now[0] = 1e12
    assert cache.remember("forever", None) is False
    cache.remember("x", None)
    cache.remember("y", None)
    assert "forever" not in cache


def test_replay_cache_memory_bounded_with_10000_distinct_jtis() -> None:
    cap = 1000
    cache = ReplayCache(cap, clock=lambda: 0.0)
    for i in range(10_000):
        assert cache.remember(f"jti-{i}", 10_000 + i) is True
        assert len(cache) <= cap
    assert len(cache) == cap
    assert len(cache._heap) <= 2 * cap + 16
    assert cache.remember("jti-9999", 20_000) is False  # newest still remembered
    assert cache.remember("jti-0", 10_000) is True  # oldest evicted


def test_replay_cache_requires_positive_cap() -> None:
    with pytest.raises(ValueError, match="cap"):
        ReplayCache(0)


# --------------------------------------------------------------- stale temp files (issue 12)

_CRASHING_WRITER = """
import os, signal, sys
from pathlib import Path
from agent.daemon.state import SourceMeta, StateStore
from agent.config.schema import config_from_dict
from agent.jws.keys import generate_keys, parse_signing_key
from agent.jws.tokens import sign_token
from agent.trust.gate import Context, TrustGate
import asyncio

def crash(src, dst):
    os.kill(os.getpid(), signal.SIGKILL)  # killed after the temp file is written, before replace

store = StateStore(Path(sys.argv[1]))
which = sys.argv[2]
os.replace = crash
if which == "token":
    private, public = generate_keys("ed25519", "child")
    gate = TrustGate(config_from_dict({"run": {"verifyKeys": [public]}}))
    raw = sign_token({"iat": 2}, parse_signing_key(private))
    store.save("web", asyncio.run(gate.admit(raw, "", Context.RESTORE)), SourceMeta())
elif which == "meta":
    store.save_meta("web", SourceMeta(etag="new"))
else:
    store.save_replay([("jti-new", None)])
"""


def _crash_writer(state_dir: Path, which: str) -> None:
    import signal
    import subprocess
    import sys

    repo = REPO
    proc = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(state_dir), which],
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_start_up_cleanup_removes_temp_files_of_killed_writers_and_nothing_else(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path)
    store.save("web", ADMITTED, SourceMeta(etag="old"))
    store.save_replay([("jti-old", None)])
    state_files = {"web.jwt", "web.meta.json", "agent-replay.json"}
    for which in ("token", "meta", "replay"):
        _crash_writer(tmp_path, which)
    leftovers = {p.name for p in tmp_path.iterdir()} - state_files
    # the temp files of each killed writer, named after the state files they were replacing
    # (save stages both of its files before the first rename, so it leaves two)
    targets = sorted(n.rsplit(".", 2)[0] for n in leftovers)
    assert targets == [".agent-replay.json", ".web.jwt", ".web.meta.json", ".web.meta.json"], (
        leftovers
    )
    assert all(n.endswith(".agent-tmp") for n in leftovers)
    unrelated = [
        "notes.txt",
        ".web.jwt.tmp",
        ".web.jwt.abcd1234.agent-tmp.bak",
        "web.jwt.abcd1234.agent-tmp",  # no leading dot: not ours
        ".notes.txt.abcd1234.tmp",  # old-style name, but not of a state file
    ]
    for name in unrelated:
        (tmp_path / name).write_text("keep me")
    (tmp_path / ".dir.jwt.abcd1234.agent-tmp").mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.write_text("keep me")
    (tmp_path / ".link.jwt.abcd1234.agent-tmp").symlink_to(outside)

    removed = store.remove_stale_temp_files()

    assert sorted(p.name for p in removed) == sorted(leftovers)
    assert {p.name for p in tmp_path.iterdir()} == state_files | set(unrelated) | {
        ".dir.jwt.abcd1234.agent-tmp",
        ".link.jwt.abcd1234.agent-tmp",
    }
    assert outside.read_text() == "keep me"
    loaded = store.load("web")
    assert loaded is not None and loaded.token == TOKEN and loaded.meta.etag == "old"
    assert store.load_replay() == [("jti-old", None)]
    assert store.remove_stale_temp_files() == []


def test_start_up_cleanup_removes_old_style_temp_files_of_state_files(tmp_path: Path) -> None:
    for name in (
        ".web.jwt.ab_d1234.tmp",
        ".web.meta.json.x9y8z7w6.tmp",
        ".agent-replay.json.a1b2c3d4.tmp",
    ):
        (tmp_path / name).write_text("half")
    removed = StateStore(tmp_path).remove_stale_temp_files()
    assert len(removed) == 3
    assert list(tmp_path.iterdir()) == []


def test_start_up_cleanup_keeps_a_temp_file_a_live_writer_holds(tmp_path: Path) -> None:
    import fcntl

    live = tmp_path / ".web.jwt.live1234.agent-tmp"
    with live.open("wb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        assert StateStore(tmp_path).remove_stale_temp_files() == []
        assert live.exists()
    assert StateStore(tmp_path).remove_stale_temp_files() == [live]
    assert not live.exists()


def test_start_up_cleanup_of_a_missing_state_dir_removes_nothing(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "not-yet").remove_stale_temp_files() == []


def test_atomic_write_temp_files_are_recognisable(tmp_path: Path) -> None:
    from agent.core.atomicio import is_temp_name

    seen: list[str] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(Path(src).name)
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", spy)
        atomic_write(tmp_path / "web.meta.json", b"{}")
    assert len(seen) == 1 and is_temp_name(seen[0]), seen
    assert seen[0].startswith(".web.meta.json.") and seen[0].endswith(".agent-tmp")
    assert not is_temp_name("web.meta.json") and not is_temp_name(".web.meta.json")


def test_load_refuses_a_token_file_over_the_size_bound(tmp_path: Path) -> None:
    bound = len(TOKEN)
    store = StateStore(tmp_path, max_token_bytes=bound)
    store.save("web", ADMITTED, SourceMeta())
    loaded = store.load("web")
    assert loaded is not None and len(loaded.token) == bound
    store.save("big", admitted(pad="x" * 8), SourceMeta())
    with pytest.raises(SourceError, match=f"expected at most {bound} bytes"):
        store.load("big")


def test_a_state_dir_written_by_the_previous_version_loads(tmp_path: Path) -> None:
    # The bytes the previous version wrote (one atomic write per file, same formats).
    (tmp_path / "web.jwt").write_text(TOKEN)
    meta = {
        "accepted_at": 1700000123.5,
        "action": "push",
        "etag": "",
        "high_water_iat": 1,
        "last_modified": "",
        "version": 1,
    }
    (tmp_path / "web.meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (tmp_path / "agent-replay.json").write_text('{"version": 1, "jtis": [["j1", null]]}')
    store = StateStore(tmp_path)
    assert store.load("web") == StoredState(
        token=TOKEN, meta=SourceMeta(high_water_iat=1, accepted_at=1700000123.5, action="push")
    )
    assert store.load_replay() == [("j1", None)]
    # and this version writes the same formats back
    store.save(
        "web", ADMITTED, SourceMeta(high_water_iat=1, accepted_at=1700000123.5, action="push")
    )
    assert json.loads((tmp_path / "web.meta.json").read_text()) == meta
