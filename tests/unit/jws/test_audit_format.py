"""The audit log's format helpers (:mod:`agent.jws.audit`) on real files: checkpoints, file order,
the host's audit key, tail repair and the last chained line."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agent.core.errors import KeyFormatError
from agent.jws.audit import (
    GENESIS,
    KEY_FILE,
    audit_files,
    checkpoint_line,
    checkpoint_valid,
    last_chained,
    line_hash,
    load_or_create_key,
    repair_tail,
    rotated_name,
)
from agent.jws.keys import generate_keys, parse_signing_key


def test_a_checkpoint_verifies_with_its_key_and_not_once_altered_or_malformed() -> None:
    key = parse_signing_key(generate_keys("ed25519", "audit")[0])
    other = parse_signing_key(generate_keys("ed25519", "other")[0])
    line = checkpoint_line(key, 7, "ab" * 32)
    assert checkpoint_valid(line, key.public())
    assert not checkpoint_valid(line, other.public())
    assert not checkpoint_valid({**line, "seq": 8}, key.public())
    assert not checkpoint_valid({**line, "seq": "7"}, key.public())
    assert not checkpoint_valid({**line, "sig": "!!!not base64!!!"}, key.public())
    assert not checkpoint_valid({k: v for k, v in line.items() if k != "sig"}, key.public())


def test_audit_files_are_rotated_ones_by_last_seq_then_the_current_file(tmp_path: Path) -> None:
    assert audit_files(tmp_path / "missing") == []
    for name in (rotated_name(20), rotated_name(3), "audit.jsonl", "audit-12.jsonl", "notes"):
        (tmp_path / name).write_text("")
    assert [p.name for p in audit_files(tmp_path)] == [
        "audit-000000000003.jsonl",
        "audit-000000000020.jsonl",
        "audit.jsonl",
    ]


def test_the_audit_key_is_generated_once_with_mode_0600_and_then_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = load_or_create_key(state)
    path = state / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(state).public().material == first.public().material


def test_a_configured_audit_key_wins_and_must_be_ed25519(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "configured")
    assert str(load_or_create_key(tmp_path, private).public()) == public
    assert not (tmp_path / KEY_FILE).exists()
    ecdsa, _ = generate_keys("ecp256", "p256")
    with pytest.raises(KeyFormatError, match=r"run\.auditSigningKey: expected an ed25519"):
        load_or_create_key(tmp_path, ecdsa)


def test_repair_tail_drops_only_a_trailing_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    assert repair_tail(path) == b""
    path.write_bytes(b'{"seq":1}\n')
    assert repair_tail(path) == b""
    assert path.read_bytes() == b'{"seq":1}\n'
    path.write_bytes(b'{"seq":1}\n{"seq":2')
    assert repair_tail(path) == b'{"seq":2'
    assert path.read_bytes() == b'{"seq":1}\n'
    path.write_bytes(b"x" * 70000)  # no newline at all: everything is partial
    assert len(repair_tail(path)) == 70000
    assert path.read_bytes() == b""


def test_last_chained_skips_checkpoints_and_broken_lines(tmp_path: Path) -> None:
    key = parse_signing_key(generate_keys("ed25519", "audit")[0])
    first: dict[str, object] = {"seq": 1, "prev": GENESIS, "event": "start"}
    digest = line_hash(first)
    first["hash"] = digest
    path = tmp_path / "audit.jsonl"
    lines = [json.dumps(first), json.dumps(checkpoint_line(key, 1, digest)), "[1]", "{bad"]
    path.write_text("\n".join(lines) + "\n")
    assert last_chained(path) == (1, digest)
    path.write_text(json.dumps({"event": "x", "seq": "1"}) + "\n")
    assert last_chained(path) is None
