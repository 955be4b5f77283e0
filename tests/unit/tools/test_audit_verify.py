"""agent audit verify/show (agent.tools.audit): every kind of tampering is caught at its line,
receipts are confirmed or refused, and the CLI reports FILE:LINE with exit 1."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support import RIGHT_PUB, run_agent, write_json

from agent.core.errors import UsageError
from agent.daemon.audit import AuditLog
from agent.jws.audit import load_or_create_key
from agent.jws.keys import VerifyKey, parse_verify_key
from agent.tools.audit import (
    format_table,
    parse_receipt,
    read_entries,
    select_entries,
    verify_dir,
)


def build_log(tmp: Path, entries: int = 10) -> Path:
    """``tmp/audit`` with ``entries`` chained lines and a checkpoint after every third."""
    log = AuditLog(tmp / "audit", key=lambda: load_or_create_key(tmp), checkpoint_every=3)
    for i in range(entries):
        log.record("run" if i % 2 else "admit", source="web" if i % 3 else "db", i=i)
    log.close()
    return tmp / "audit" / "audit.jsonl"


def key(tmp: Path) -> VerifyKey:
    return load_or_create_key(tmp).public()


def edit(path: Path, fn: object) -> None:
    rows = path.read_text().splitlines(keepends=True)
    assert callable(fn)
    fn(rows)
    path.write_text("".join(rows))


# Line layout of build_log: 1 a(1) 2 r(2) 3 a(3) 4 cp 5 r(4) 6 a(5) 7 r(6) 8 cp 9 a(7) 10 r(8)
# 11 a(9) 12 cp 13 r(10) 14 cp


def test_an_intact_log_verifies(tmp_path: Path) -> None:
    build_log(tmp_path)
    report = verify_dir(tmp_path / "audit", public_key=key(tmp_path))
    assert report.ok and report.entries == 10 and report.checkpoints == 4 and report.last_seq == 10


def test_a_one_character_edit_is_reported_at_its_line(tmp_path: Path) -> None:
    path = build_log(tmp_path)
    edit(
        path, lambda rows: rows.__setitem__(5, rows[5].replace('"source":"web"', '"source":"wex"'))
    )
    report = verify_dir(tmp_path / "audit", public_key=key(tmp_path))
    assert str(report.broken).startswith("audit.jsonl:6: seq 5: hash does not match")


def test_a_deleted_line_is_reported_where_it_was(tmp_path: Path) -> None:
    path = build_log(tmp_path)
    edit(path, lambda rows: rows.pop(4))
    report = verify_dir(tmp_path / "audit", public_key=key(tmp_path))
    assert str(report.broken).startswith("audit.jsonl:5: seq 5 follows seq 3: expected 4")


def test_an_inserted_line_is_reported_at_the_insertion(tmp_path: Path) -> None:
    path = build_log(tmp_path)
    edit(path, lambda rows: rows.insert(6, rows[0]))
    report = verify_dir(tmp_path / "audit", public_key=key(tmp_path))
    assert str(report.broken).startswith("audit.jsonl:7: seq 1 follows seq 5")


def test_a_forged_line_with_a_correct_hash_is_reported_at_the_next_line(tmp_path: Path) -> None:
    """A rewritten line whose hash was recomputed breaks the next line's prev."""
    from agent.jws.audit import line_hash

    def forge(rows: list[str]) -> None:
        entry = json.loads(rows[4])
        entry["source"] = "evil"
        entry["hash"] = line_hash(entry)
        rows[4] = json.dumps(entry) + "\n"

    path = build_log(tmp_path)
    edit(path, forge)
    report = verify_dir(tmp_path / "audit", public_key=key(tmp_path))
    assert report.broken is not None and report.broken.line == 6
    assert "checkpoint" in report.broken.message or "prev" in report.broken.message


def test_two_swapped_lines_are_reported_at_the_first(tmp_path: Path) -> None:
    def swap(rows: list[str]) -> None:
        rows[5], rows[6] = rows[6], rows[5]

    path = build_log(tmp_path)
    edit(path, swap)
    report = verify_dir(tmp_path / "audit", public_key=key(tmp_path))
    assert str(report.broken).startswith("audit.jsonl:6: seq 6 follows seq 4")


def test_an_edited_checkpoint_is_reported_at_its_line(tmp_path: Path) -> None:
    def resign(rows: list[str]) -> None:
        entry = json.loads(rows[7])
        entry["sig"] = ("A" if entry["sig"][0] != "A" else "B") + entry["sig"][1:]
        rows[7] = json.dumps(entry) + "\n"

    path = build_log(tmp_path)
    edit(path, resign)
    report = verify_dir(tmp_path / "audit", public_key=key(tmp_path))
    assert str(report.broken) == (
        "audit.jsonl:8: checkpoint signature does not verify with the audit public key"
    )


def test_checkpoints_signed_by_another_key_fail(tmp_path: Path) -> None:
    build_log(tmp_path)
    report = verify_dir(tmp_path / "audit", public_key=parse_verify_key(RIGHT_PUB))
    assert report.broken is not None and report.broken.line == 4


def test_a_partial_last_line_is_broken_until_the_daemon_repairs_it(tmp_path: Path) -> None:
    path = build_log(tmp_path)
    with path.open("a") as fh:
        fh.write('{"seq":11')
    report = verify_dir(tmp_path / "audit", public_key=key(tmp_path))
    assert str(report.broken).startswith("audit.jsonl:15: partial last line")


def test_a_receipt_is_confirmed(tmp_path: Path) -> None:
    build_log(tmp_path)
    line = json.loads((tmp_path / "audit" / "audit.jsonl").read_text().splitlines()[4])
    report = verify_dir(tmp_path / "audit", receipt=(line["seq"], line["hash"]))
    assert report.ok and not report.signed


def test_truncation_after_the_last_checkpoint_shows_only_through_a_receipt(tmp_path: Path) -> None:
    path = build_log(tmp_path)
    last = json.loads(path.read_text().splitlines()[12])  # seq 10, after the checkpoint of 9
    edit(path, lambda rows: rows.__delitem__(slice(12, None)))
    assert verify_dir(tmp_path / "audit", public_key=key(tmp_path)).ok  # undetectable alone
    report = verify_dir(tmp_path / "audit", receipt=(last["seq"], last["hash"]))
    assert not report.ok
    assert report.receipt_error.startswith("receipt 10: beyond the log's end (last seq 9)")


def test_a_receipt_with_another_hash_is_refused(tmp_path: Path) -> None:
    build_log(tmp_path)
    report = verify_dir(tmp_path / "audit", receipt=(3, "0" * 64))
    assert "the log has" in report.receipt_error


def test_a_malformed_receipt_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="SEQ:HASH"):
        parse_receipt("12:nothex")


def test_show_filters_by_source_event_and_age(tmp_path: Path) -> None:
    build_log(tmp_path)
    entries = list(read_entries(tmp_path / "audit"))
    web_runs = select_entries(iter(entries), source="web", event="run")
    assert [e["seq"] for e in web_runs] == [2, 6, 8]
    assert len(select_entries(iter(entries), event="checkpoint")) == 4
    assert select_entries(iter(entries), since=60, now=time.time() + 3600) == []
    table = format_table(web_runs)
    assert table[0].split() == ["SEQ", "TIME", "EVENT", "SOURCE", "CONTEXT", "DETAIL"]
    assert table[1].split()[:4] == ["2", web_runs[0]["time"], "run", "web"]


def test_the_cli_catches_a_one_character_edit(tmp_path: Path) -> None:
    path = build_log(tmp_path)
    config = write_json(tmp_path / "c.json", {"run": {"stateDir": str(tmp_path)}})
    ok = run_agent("-c", str(config), "audit", "verify", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (
        "OK: 10 entries (seq 1..10) in 1 file(s), 4 checkpoint(s), signatures verified" in ok.stdout
    )
    edit(path, lambda rows: rows.__setitem__(2, rows[2].replace('"i":2', '"i":3')))
    bad = run_agent("-c", str(config), "audit", "verify", str(tmp_path / "audit"), cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stdout.startswith("BROKEN: audit.jsonl:3: seq 3: hash does not match")


def test_the_cli_prints_the_key_and_shows_json(tmp_path: Path) -> None:
    build_log(tmp_path)
    config = write_json(tmp_path / "c.json", {"run": {"stateDir": str(tmp_path)}})
    printed = run_agent("-c", str(config), "audit", "key", cwd=tmp_path)
    assert printed.stdout.strip() == str(key(tmp_path))
    shown = run_agent("-c", str(config), "audit", "show", "--event", "admit", "-f", "json")
    assert [e["seq"] for e in json.loads(shown.stdout)] == [1, 3, 5, 7, 9]
    other = run_agent(
        "-c",
        str(config),
        "audit",
        "verify",
        "--public-key",
        RIGHT_PUB,
        "--receipt",
        "99:" + "a" * 64,
    )
    assert other.returncode == 1 and "BROKEN: audit.jsonl:4: checkpoint signature" in other.stdout


def test_the_cli_does_not_claim_verified_signatures_before_any_checkpoint(tmp_path: Path) -> None:
    log = AuditLog(
        tmp_path / "audit", key=lambda: load_or_create_key(tmp_path), checkpoint_every=99
    )
    log.record("admit", source="web")
    log.record("run", source="web")  # a running daemon: no checkpoint written yet
    config = write_json(tmp_path / "c.json", {"run": {"stateDir": str(tmp_path)}})
    ok = run_agent("-c", str(config), "audit", "verify", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "0 checkpoint(s), signatures none to check (no checkpoint yet)" in ok.stdout
    log.close()
