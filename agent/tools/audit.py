"""Reading the audit log: ``agent audit verify`` (chain, checkpoints, receipts) and ``show``.

:func:`verify_dir` walks every file of an audit directory in chain order
(:func:`agent.jws.audit.audit_files`) and stops at the first broken link, named ``FILE:LINE``
(1-based): a line that is not JSON, a line whose ``hash`` is not the hash of its content (changed),
a ``seq`` that is not the previous one plus one or a ``prev`` that is not the previous line's
``hash`` (a line removed, inserted or moved), a checkpoint that does not name the line before it
or whose signature does not verify, and a partial last line (a crash the daemon has not repaired
yet). A receipt (``SEQ:HASH``) is confirmed when the line with that ``seq`` has that ``hash``.

What this cannot see (docs/security.md): lines cut off after the last checkpoint (only a receipt
or a shipped checkpoint beyond the end shows it), a whole oldest file removed, and a log rewritten
and re-signed by someone holding the host's audit key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.core.errors import UsageError
from agent.jws.audit import CHECKPOINT, GENESIS, audit_files, checkpoint_valid, line_hash
from agent.jws.keys import VerifyKey

__all__ = [
    "Break",
    "VerifyReport",
    "format_table",
    "parse_receipt",
    "read_entries",
    "select_entries",
    "verify_dir",
]


@dataclass(frozen=True, slots=True)
class Break:
    """The first broken link: where and what."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :func:`verify_dir` found.

    Attributes:
        files: the files walked, in order.
        entries: chained lines read.
        checkpoints: checkpoint lines read (and, with a key, verified).
        first_seq, last_seq, last_hash: the chain's ends (0 and "" when empty).
        signed: whether checkpoint signatures were checked (a public key was given).
        broken: the first broken link (``None``: intact).
        receipt_error: why the receipt was not confirmed (``""``: confirmed, or none asked).
    """

    files: tuple[str, ...]
    entries: int
    checkpoints: int
    first_seq: int
    last_seq: int
    last_hash: str
    signed: bool
    broken: Break | None
    receipt_error: str = ""

    @property
    def ok(self) -> bool:
        """Intact, and the receipt (if any) confirmed."""
        return self.broken is None and not self.receipt_error


def parse_receipt(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` -> ``(seq, hash)``.

    Raises:
        UsageError: not ``<positive integer>:<64 hex digits>``.
    """
    seq, _, hash_ = text.strip().partition(":")
    if not seq.isdigit() or int(seq) < 1 or len(hash_) != 64 or not _is_hex(hash_):
        raise UsageError(f"--receipt: expected SEQ:HASH (e.g. 12:<64 hex digits>), got {text!r}")
    return int(seq), hash_.lower()


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


class _Walk:
    """The state of one verification walk."""

    def __init__(self, key: VerifyKey | None) -> None:
        self.key = key
        self.seq = 0
        self.hash = ""
        self.first = 0
        self.entries = 0
        self.checkpoints = 0
        self.hashes: dict[int, str] = {}

    def checkpoint(self, entry: Mapping[str, Any]) -> str:
        self.checkpoints += 1
        if self.seq == 0 or entry.get("seq") != self.seq or entry.get("hash") != self.hash:
            return (
                f"checkpoint names seq {entry.get('seq')!r}, expected the line before it "
                f"(seq {self.seq})"
            )
        if self.key is not None and not checkpoint_valid(entry, self.key):
            return "checkpoint signature does not verify with the audit public key"
        return ""

    def chained(self, entry: Mapping[str, Any]) -> str:
        seq, prev, hash_ = entry.get("seq"), entry.get("prev"), entry.get("hash")
        if not isinstance(seq, int) or not isinstance(prev, str) or not isinstance(hash_, str):
            return "expected integer seq and string prev and hash, got a line without them"
        if line_hash(entry) != hash_:
            return f"seq {seq}: hash does not match the line's content (the line was changed)"
        if self.seq == 0:
            if seq == 1 and prev != GENESIS:
                return f"seq 1: expected prev {GENESIS[:8]}..., got {prev[:16]}"
            self.first = seq
        elif seq != self.seq + 1:
            return (
                f"seq {seq} follows seq {self.seq}: expected {self.seq + 1} "
                "(a line was removed, inserted or moved)"
            )
        elif prev != self.hash:
            return f"seq {seq}: prev is not the hash of the line before (a line was replaced)"
        self.seq, self.hash = seq, hash_
        self.entries += 1
        self.hashes[seq] = hash_
        return ""


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as fh:
        yield from enumerate(fh, 1)


def _check_line(walk: _Walk, raw: bytes) -> str:
    if not raw.endswith(b"\n"):
        return "partial last line (a crash; the daemon truncates it at its next start)"
    try:
        entry = json.loads(raw)
    except ValueError:
        return "not a JSON line"
    if not isinstance(entry, dict):
        return "not a JSON object"
    if entry.get("event") == CHECKPOINT and "prev" not in entry:
        return walk.checkpoint(entry)
    return walk.chained(entry)


def verify_dir(
    directory: Path, *, public_key: VerifyKey | None = None, receipt: tuple[int, str] | None = None
) -> VerifyReport:
    """Walk every audit file in ``directory``; stop at the first broken link.

    Args:
        directory: the audit directory.
        public_key: the host's audit public key (``None``: signatures are not checked).
        receipt: a ``(seq, hash)`` receipt to confirm.

    Returns:
        The report (``report.ok``: intact and the receipt confirmed).
    """
    files = audit_files(directory)
    walk = _Walk(public_key)
    broken: Break | None = None
    for path in files:
        for number, raw in _lines(path):
            message = _check_line(walk, raw)
            if message:
                broken = Break(path.name, number, message)
                break
        if broken is not None:
            break
    return VerifyReport(
        files=tuple(p.name for p in files),
        entries=walk.entries,
        checkpoints=walk.checkpoints,
        first_seq=walk.first,
        last_seq=walk.seq,
        last_hash=walk.hash,
        signed=public_key is not None,
        broken=broken,
        receipt_error=_receipt_error(walk, receipt) if receipt is not None else "",
    )


def _receipt_error(walk: _Walk, receipt: tuple[int, str]) -> str:
    seq, hash_ = receipt
    found = walk.hashes.get(seq)
    if found == hash_:
        return ""
    if found is not None:
        return f"receipt {seq}: expected hash {hash_}, the log has {found} (the line was changed)"
    if seq > walk.seq:
        return (
            f"receipt {seq}: beyond the log's end (last seq {walk.seq}): lines were removed "
            "from the end, or the log was replaced"
        )
    return f"receipt {seq}: not in the log (it starts at seq {walk.first}; older files rotated)"


def read_entries(directory: Path) -> Iterator[dict[str, Any]]:
    """Every complete JSON object line of the audit files, in order (unverified)."""
    for path in audit_files(directory):
        for _, raw in _lines(path):
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry


def _entry_time(entry: Mapping[str, Any]) -> float | None:
    text = entry.get("time")
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def select_entries(
    entries: Iterator[dict[str, Any]],
    *,
    source: str | None = None,
    since: float | None = None,
    event: str | None = None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """The entries ``agent audit show`` prints: by source, age (seconds) and event.

    Checkpoint lines are shown only with ``event="checkpoint"``.
    """
    cutoff = (time.time() if now is None else now) - since if since is not None else None
    out = []
    for entry in entries:
        kind = entry.get("event")
        if (event is None and kind == CHECKPOINT) or (event is not None and kind != event):
            continue
        if source is not None and entry.get("source") != source:
            continue
        if cutoff is not None:
            when = _entry_time(entry)
            if when is None or when < cutoff:
                continue
        out.append(entry)
    return out


def _detail(entry: Mapping[str, Any]) -> str:
    kind = entry.get("event")
    parts: list[str] = []
    if kind == "run":
        result = entry.get("result") or {}
        parts = [
            f"changed {len(result.get('changed') or [])}",
            f"removed {len(result.get('removed') or [])}",
            f"failed {len(result.get('failed') or [])}",
            f"{result.get('durationMs', 0)}ms",
        ]
        if result.get("error"):
            parts.append(f"error: {result['error']}")
    for name in ("phase", "reason", "kid", "jti", "remoteAddr", "trigger", "changed", "revoked"):
        value = entry.get(name)
        if value not in (None, "", []):
            parts.append(f"{name} {value if isinstance(value, str) else json.dumps(value)}")
    return ", ".join(parts)


def format_table(entries: list[dict[str, Any]]) -> list[str]:
    """The ``agent audit show`` table: SEQ, TIME, EVENT, SOURCE, CONTEXT, DETAIL."""
    rows = [("SEQ", "TIME", "EVENT", "SOURCE", "CONTEXT", "DETAIL")]
    for e in entries:
        rows.append(
            (
                str(e.get("seq", "")),
                str(e.get("time", "")),
                str(e.get("event", "")),
                str(e.get("source", "")),
                str(e.get("context", "")),
                _detail(e),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
        for r in rows
    ]
