"""``agent audit verify``/``show`` internals (:mod:`agent.tools.audit`) on hand-written logs: the
breaks a daemon never writes (a checkpoint first, lines without chain fields, a bad genesis,
non-JSON), a log whose older files were rotated away, and the ``show`` selection and detail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.jws.audit import GENESIS, line_hash
from agent.tools.audit import (
    format_table,
    parse_receipt,
    read_entries,
    select_entries,
    verify_dir,
)


def chained(first: int, count: int, prev: str = GENESIS, **extra: Any) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for seq in range(first, first + count):
        entry: dict[str, Any] = {"seq": seq, "prev": prev, "event": "admit", **extra}
        entry["hash"] = prev = line_hash(entry)
        lines.append(entry)
    return lines


def write(directory: Path, *rows: Any) -> Path:
    directory.mkdir(exist_ok=True)
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    (directory / "audit.jsonl").write_text(text)
    return directory


def test_a_checkpoint_before_any_chained_line_is_a_break(tmp_path: Path) -> None:
    report = verify_dir(write(tmp_path, {"event": "checkpoint", "seq": 1, "hash": "x"}))
    assert str(report.broken) == (
        "audit.jsonl:1: checkpoint names seq 1, expected the line before it (seq 0)"
    )


def test_a_line_without_chain_fields_is_a_break(tmp_path: Path) -> None:
    report = verify_dir(write(tmp_path, *chained(1, 2), {"event": "admit", "seq": 3}))
    assert report.broken is not None
    assert report.broken.line == 3
    assert "expected integer seq and string prev and hash" in report.broken.message


def test_a_first_line_whose_prev_is_not_genesis_is_a_break(tmp_path: Path) -> None:
    report = verify_dir(write(tmp_path, *chained(1, 1, prev="f" * 64)))
    assert report.broken is not None
    assert report.broken.message.startswith("seq 1: expected prev 00000000..., got ffffffff")


def test_lines_that_are_not_json_objects_are_breaks(tmp_path: Path) -> None:
    lines = chained(1, 1)
    assert str(verify_dir(write(tmp_path, *lines, "{oops")).broken) == (
        "audit.jsonl:2: not a JSON line"
    )
    assert str(verify_dir(write(tmp_path, *lines, "[1, 2]")).broken) == (
        "audit.jsonl:2: not a JSON object"
    )


def test_a_log_whose_oldest_lines_rotated_away_verifies_but_an_old_receipt_is_not_in_it(
    tmp_path: Path,
) -> None:
    lines = chained(5, 3, prev="a" * 64)
    write(tmp_path, *lines)
    report = verify_dir(tmp_path, receipt=parse_receipt(f"6:{lines[1]['hash'].upper()}"))
    assert report.ok
    assert (report.first_seq, report.last_seq, report.entries) == (5, 7, 3)
    old = verify_dir(tmp_path, receipt=(2, "b" * 64))
    assert old.broken is None
    assert (
        old.receipt_error == "receipt 2: not in the log (it starts at seq 5; older files rotated)"
    )


def test_show_reads_only_json_objects_and_since_drops_entries_without_a_readable_time(
    tmp_path: Path,
) -> None:
    good = {"event": "admit", "source": "web", "time": "2026-01-01T00:00:10.000000Z"}
    no_time = {"event": "admit", "source": "web"}
    bad_time = {"event": "admit", "source": "web", "time": "yesterday"}
    write(tmp_path, good, "not json", "[1]", no_time, bad_time)
    entries = list(read_entries(tmp_path))
    assert entries == [good, no_time, bad_time]
    now = 1767225600.0 + 20  # 2026-01-01T00:00:20Z
    assert select_entries(iter(entries), since=60, now=now) == [good]
    assert select_entries(iter(entries), since=5, now=now) == []


def test_show_details_a_failed_run_and_list_valued_fields() -> None:
    run = {
        "seq": 3,
        "time": "t",
        "event": "run",
        "source": "web",
        "result": {"changed": ["a"], "failed": ["b"], "durationMs": 12, "error": "boom"},
        "revoked": ["ci", "team"],
    }
    header, row = format_table([run])
    assert header.split() == ["SEQ", "TIME", "EVENT", "SOURCE", "CONTEXT", "DETAIL"]
    assert row.endswith('changed 1, removed 0, failed 1, 12ms, error: boom, revoked ["ci", "team"]')
