"""The audit log writer (agent.daemon.audit): chain, checkpoints, repair, rotation, fsync groups,
what a run line keeps of outputs, and journald forwarding to a fake journal socket."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from agent.config.schema import config_from_dict
from agent.daemon.audit import AuditLog, NoAudit, open_audit, run_fields, scrub_error
from agent.daemon.journal import MESSAGE_ID, JournalSink, encode_fields
from agent.jws.audit import GENESIS, audit_files, checkpoint_valid, line_hash, load_or_create_key
from agent.run.result import Result


def make_log(tmp: Path, **kw: Any) -> AuditLog:
    return AuditLog(tmp / "audit", key=lambda: load_or_create_key(tmp), **kw)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in path.read_text().splitlines()]


def chained(tmp: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in audit_files(tmp / "audit"):
        out.extend(e for e in lines(path) if e["event"] != "checkpoint")
    return out


def count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, every ``os.fsync`` still syncs and appends its fd to the returned list."""
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_lines_are_hash_chained_with_increasing_seq(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    receipts = [log.record("start", pid=1), log.record("reload", changed=["run"])]
    log.close()
    entries = chained(tmp_path)
    assert [e["seq"] for e in entries] == [1, 2]
    assert entries[0]["prev"] == GENESIS
    assert entries[1]["prev"] == entries[0]["hash"]
    assert all(line_hash(e) == e["hash"] for e in entries)
    assert [(r.seq, r.hash) for r in receipts] == [(e["seq"], e["hash"]) for e in entries]


def test_empty_fields_are_left_out_of_a_line(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    log.record("refuse", source="web", kid="", reason="no_match", chain=[])
    log.close()
    (entry,) = chained(tmp_path)
    assert "kid" not in entry and "chain" not in entry and entry["reason"] == "no_match"


def test_a_checkpoint_is_signed_every_n_entries_and_at_close(tmp_path: Path) -> None:
    log = make_log(tmp_path, checkpoint_every=2)
    for i in range(3):
        log.record("x", i=i)
    log.close()
    all_lines = lines(tmp_path / "audit" / "audit.jsonl")
    assert [e["event"] for e in all_lines] == ["x", "x", "checkpoint", "x", "checkpoint"]
    key = load_or_create_key(tmp_path).public()
    assert all(checkpoint_valid(e, key) for e in all_lines if e["event"] == "checkpoint")
    assert all_lines[2]["seq"] == 2 and all_lines[2]["hash"] == all_lines[1]["hash"]


def test_the_generated_audit_key_is_private_to_the_owner(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    assert (tmp_path / "audit.key").stat().st_mode & 0o777 == 0o600
    assert str(load_or_create_key(tmp_path).public()) == str(key.public())


def test_a_restart_continues_the_chain(tmp_path: Path) -> None:
    first = make_log(tmp_path)
    first.record("start")
    first.close()
    second = make_log(tmp_path)
    second.record("start")
    second.close()
    entries = chained(tmp_path)
    assert [e["seq"] for e in entries] == [1, 2]
    assert entries[1]["prev"] == entries[0]["hash"]


def test_a_partial_last_line_is_truncated_and_recorded_as_repair(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    log.record("start")
    log.close()
    current = tmp_path / "audit" / "audit.jsonl"
    with current.open("ab") as fh:
        fh.write(b'{"seq":2,"time":"2026-')  # a write cut short by a crash
    log = make_log(tmp_path)
    log.record("start")
    log.close()
    entries = chained(tmp_path)
    assert [e["event"] for e in entries] == ["start", "repair", "start"]
    assert entries[1]["droppedBytes"] == len(b'{"seq":2,"time":"2026-')
    assert entries[1]["prev"] == entries[0]["hash"]


def test_rotation_keeps_auditkeep_files_and_the_chain_continues(tmp_path: Path) -> None:
    log = make_log(tmp_path, max_bytes=700, keep=3)
    for i in range(30):
        log.record("x", i=i)
    log.close()
    files = audit_files(tmp_path / "audit")
    assert len(files) == 3 and files[-1].name == "audit.jsonl"
    entries = chained(tmp_path)
    assert [e["seq"] for e in entries] == list(range(entries[0]["seq"], 31))
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(entries))
    first_of_current = lines(files[-1])[0]
    last_of_previous = [e for e in lines(files[-2]) if e["event"] != "checkpoint"][-1]
    assert first_of_current["prev"] == last_of_previous["hash"]


def test_concurrent_async_records_share_fsyncs_and_keep_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(tmp_path)
    log.open()
    calls = count_fsyncs(monkeypatch)

    async def many() -> list[int]:
        receipts = await asyncio.gather(*(log.arecord("x", i=i) for i in range(50)))
        return [r.seq for r in receipts]

    seqs = asyncio.run(many())
    assert seqs == list(range(1, 51))
    assert 1 <= len(calls) < 10  # 50 lines, a handful of fsyncs
    log.close()


def test_a_run_line_keeps_output_digests_never_output(tmp_path: Path) -> None:
    secret = "password=hunter2-in-output"
    result = Result(
        changed_ids=("a",),
        changed_outputs=(secret,),
        failed_ids=("a",),
        failed_outputs=(secret,),
        err=f"error changing id a: exit status 1: {secret}",
    )
    fields = run_fields(result, 0.25)
    text = json.dumps(fields)
    assert "hunter2" not in text
    assert fields["durationMs"] == 250 and fields["changed"] == ["a"] and fields["failed"] == ["a"]
    assert fields["outputs"][0]["bytes"] == len(secret)
    assert fields["error"].startswith("error changing id a: exit status 1: (output: ")


def test_scrub_error_keeps_an_error_without_output() -> None:
    assert scrub_error("agent is shutting down", ["", "x"]) == "agent is shutting down"


def test_audit_false_or_no_state_dir_records_nothing(tmp_path: Path) -> None:
    off = config_from_dict({"run": {"stateDir": str(tmp_path), "audit": False}})
    assert isinstance(open_audit(off), NoAudit)
    on = config_from_dict({"run": {"stateDir": str(tmp_path)}})
    assert isinstance(open_audit(on), AuditLog)


def test_checkpoint_is_not_an_event_a_caller_may_record(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    with pytest.raises(ValueError, match="checkpoint"):
        log.record("checkpoint")
    log.close()


def _parse_native(payload: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(payload):
        end = payload.index(b"\n", pos)
        head = payload[pos:end]
        if b"=" in head:
            name, _, value = head.partition(b"=")
            out[name.decode()] = value.decode()
            pos = end + 1
        else:
            (size,) = struct.unpack("<Q", payload[end + 1 : end + 9])
            out[head.decode()] = payload[end + 9 : end + 9 + size].decode()
            pos = end + 9 + size + 1
    return out


def test_entries_go_to_the_journal_socket_as_native_fields(tmp_path: Path) -> None:
    path = tmp_path / "journal.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(5)
    try:
        log = make_log(tmp_path, journal=JournalSink(path))
        receipt = log.record("refuse", source="web", reason="no_match", remoteAddr="10.0.0.7")
        log.close()
        fields = _parse_native(server.recv(65536))
    finally:
        server.close()
    assert fields["MESSAGE_ID"] == MESSAGE_ID
    assert fields["AGENT_SEQ"] == str(receipt.seq) and fields["AGENT_HASH"] == receipt.hash
    assert fields["AGENT_REMOTE_ADDR"] == "10.0.0.7" and fields["PRIORITY"] == "4"
    assert fields["MESSAGE"] == "audit refuse, seq 1, source web, reason no_match"


def test_a_multiline_journal_value_is_length_prefixed() -> None:
    payload = encode_fields({"MESSAGE": "a\nb"})
    assert payload == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\n"


def test_an_unreachable_journal_does_not_stop_the_log(tmp_path: Path) -> None:
    log = make_log(tmp_path, journal=JournalSink(tmp_path / "missing.sock"))
    log.record("start")
    log.close()
    assert [e["event"] for e in chained(tmp_path)] == ["start"]


def test_a_gate_callback_never_raises_when_the_log_cannot_be_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agent.trust.gate import Context

    (tmp_path / "file").write_text("not a directory")
    log = AuditLog(tmp_path / "file" / "audit", key=lambda: load_or_create_key(tmp_path))
    log.refused("web", Context.PUSH, "no_match", "", "from 10.0.0.7")
    assert "Audit: refuse of web not recorded" in caplog.text


def test_audit_config_keys_shape_the_log(tmp_path: Path) -> None:
    run = {
        "stateDir": str(tmp_path),
        "auditJournal": True,
        "auditMaxBytes": 4096,
        "auditKeep": 3,
        "auditCheckpointEvery": 7,
    }
    log = open_audit(config_from_dict({"run": run}))
    assert isinstance(log, AuditLog)
    assert log.journal is not None and log.journal.path == Path("/run/systemd/journal/socket")
    assert (log.max_bytes, log.keep, log.checkpoint_every) == (4096, 3, 7)
    assert log.directory == tmp_path / "audit"
    plain = open_audit(config_from_dict({"run": {"stateDir": str(tmp_path)}}))
    assert isinstance(plain, AuditLog) and plain.journal is None


def test_a_sync_record_in_a_loop_shares_the_fsync_of_the_next_async_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(tmp_path, defer=3600.0)  # the deferred fsync never comes first
    log.open()
    calls = count_fsyncs(monkeypatch)

    async def push() -> None:
        log.record("admit", source="core")  # the gate's callback: no wait
        assert calls == []
        await log.arecord("run", source="core")  # waits for one fsync covering both lines
        assert len(calls) == 1
        assert log._synced == log._writes

    asyncio.run(push())
    assert [e["event"] for e in chained(tmp_path)] == ["admit", "run"]
    log.close()


def test_a_sync_record_in_a_loop_is_fsynced_by_its_deferred_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(tmp_path, defer=0.0)
    log.open()
    calls = count_fsyncs(monkeypatch)

    async def refused() -> None:
        log.record("refuse", source="core")
        assert calls == []
        await asyncio.gather(*log._pending)
        assert len(calls) == 1

    asyncio.run(refused())
    log.close()
