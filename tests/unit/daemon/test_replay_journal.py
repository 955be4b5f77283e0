"""The push replay cache on disk: the append-only journal, its compaction, crashes and upgrades."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

from agent.core.errors import SourceError
from agent.daemon.replay import ReplayJournal
from agent.daemon.state import StateStore

FAR = 4_000_000_000.0  # an exp far in the future


def _journal(state: Path) -> list[list[object]]:
    path = state / "agent-replay.journal"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def _accept(journal: ReplayJournal, *jtis: str) -> None:
    for jti in jtis:
        assert journal.remember(jti, FAR)
        await journal.persist()


async def _restarted(state: Path) -> ReplayJournal:
    journal = ReplayJournal(StateStore(state))
    await journal.restore()
    return journal


def test_each_accepted_jti_is_appended_to_the_journal_not_rewritten(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = await _restarted(tmp_path)
        await _accept(journal, "a", "b", "c")

    asyncio.run(scenario())
    assert _journal(tmp_path) == [["a", FAR + 30], ["b", FAR + 30], ["c", FAR + 30]]
    assert not (tmp_path / "agent-replay.json").exists()
    assert stat.S_IMODE((tmp_path / "agent-replay.journal").stat().st_mode) == 0o600


def test_a_restart_refuses_every_jti_accepted_before_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        await _accept(await _restarted(tmp_path), "a", "b")
        again = await _restarted(tmp_path)
        assert not again.remember("a", FAR)
        assert not again.remember("b", FAR)
        assert again.remember("c", FAR)

    asyncio.run(scenario())


def test_the_journal_is_compacted_into_the_replay_file_every_compact_lines(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = ReplayJournal(StateStore(tmp_path), compact_lines=3)
        await journal.restore()
        await _accept(journal, "a", "b", "c")
        assert len(_journal(tmp_path)) == 3
        await _accept(journal, "d")  # a fourth line would pass the bound: compact instead
        assert _journal(tmp_path) == []
        saved = json.loads((tmp_path / "agent-replay.json").read_text())["jtis"]
        assert [jti for jti, _ in saved] == ["a", "b", "c", "d"]
        await _accept(journal, "e")
        assert _journal(tmp_path) == [["e", FAR + 30]]
        again = await _restarted(tmp_path)
        assert not any(again.remember(j, FAR) for j in "abcde")

    asyncio.run(scenario())


def test_start_up_compacts_a_non_empty_journal_and_drops_a_torn_last_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "agent-replay.journal").write_bytes(b'["a",null]\n["b",4000000030.0]\n["c",40')

    async def scenario() -> ReplayJournal:
        return await _restarted(tmp_path)

    journal = asyncio.run(scenario())
    assert "skipped 1 malformed line" in caplog.text
    assert _journal(tmp_path) == []
    saved = json.loads((tmp_path / "agent-replay.json").read_text())["jtis"]
    assert saved == [["a", None], ["b", 4000000030.0]]
    assert not journal.remember("a", None) and not journal.remember("b", FAR)


def test_a_state_dir_of_the_previous_version_loads_and_is_extended_by_the_journal(
    tmp_path: Path,
) -> None:
    # Exactly what the previous version wrote: only agent-replay.json, no journal.
    old_jtis: list[list[object]] = [["old-1", FAR + 30], ["old-2", None]]
    (tmp_path / "agent-replay.json").write_bytes(
        json.dumps({"version": 1, "jtis": old_jtis}).encode()
    )

    async def scenario() -> None:
        journal = await _restarted(tmp_path)
        assert not journal.remember("old-1", FAR) and not journal.remember("old-2", None)
        await _accept(journal, "new")
        again = await _restarted(tmp_path)
        assert not any(again.remember(j, FAR) for j in ("old-1", "old-2", "new"))

    asyncio.run(scenario())
    # the restart compacted the journal into the file, still in the previous version's format
    saved = json.loads((tmp_path / "agent-replay.json").read_text())
    assert saved == {"version": 1, "jtis": [*old_jtis, ["new", FAR + 30]]}


def test_a_failed_append_is_followed_by_a_compaction_that_keeps_every_jti(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path)
    real = store.append_replay

    def broken(entries: list[tuple[str, float | None]]) -> None:
        raise SourceError("disk full")

    async def scenario() -> None:
        journal = ReplayJournal(store)
        await journal.restore()
        await _accept(journal, "a")
        monkeypatch.setattr(store, "append_replay", broken)
        await _accept(journal, "b")  # logged, kept in memory
        monkeypatch.setattr(store, "append_replay", real)
        await _accept(journal, "c")

    asyncio.run(scenario())
    assert _journal(tmp_path) == []
    saved = json.loads((tmp_path / "agent-replay.json").read_text())["jtis"]
    assert [jti for jti, _ in saved] == ["a", "b", "c"]


_KILLED_AFTER_ACCEPT = """
import asyncio, os, signal, sys
from pathlib import Path
from agent.daemon.replay import ReplayJournal
from agent.daemon.state import StateStore

async def main():
    store = StateStore(Path(sys.argv[1]))
    journal = ReplayJournal(store, compact_lines=int(sys.argv[3]))
    await journal.restore()
    for jti in sys.argv[2].split(","):
        assert journal.remember(jti, 4000000000.0)
        await journal.persist()
    if sys.argv[4] == "mid-compaction":
        # killed after the compacted file is durable, before the journal is emptied
        os.ftruncate = lambda fd, n: os.kill(os.getpid(), signal.SIGKILL)
        journal.remember("last", 4000000000.0)
        await journal.persist()
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


@pytest.mark.parametrize("moment", ["after-append", "mid-compaction"])
def test_a_jti_accepted_before_a_kill_is_refused_after_it(tmp_path: Path, moment: str) -> None:
    jtis = ["k1", "k2", "k3"]
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_ACCEPT, str(tmp_path), ",".join(jtis), "3", moment],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    if moment == "mid-compaction":
        jtis.append("last")
        assert len(_journal(tmp_path)) == 3  # not emptied: the union is read
        assert (tmp_path / "agent-replay.json").exists()

    async def scenario() -> None:
        journal = await _restarted(tmp_path)
        assert [j for j in jtis if journal.remember(j, 4_000_000_000.0)] == []

    asyncio.run(scenario())


def test_a_clean_stop_compacts_so_the_replay_file_alone_holds_every_jti(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = await _restarted(tmp_path)
        await _accept(journal, "a", "b")
        await journal.close()

    asyncio.run(scenario())
    assert _journal(tmp_path) == []
    saved = json.loads((tmp_path / "agent-replay.json").read_text())
    assert saved == {"version": 1, "jtis": [["a", FAR + 30], ["b", FAR + 30]]}


def test_stop_without_a_restore_leaves_the_files_alone(tmp_path: Path) -> None:
    (tmp_path / "agent-replay.journal").write_text('["a",null]\n')

    async def scenario() -> None:
        await ReplayJournal(StateStore(tmp_path)).close()

    asyncio.run(scenario())
    assert _journal(tmp_path) == [["a", None]]
    assert not (tmp_path / "agent-replay.json").exists()
