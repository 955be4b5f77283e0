"""The audit log's format: canonical lines, the hash chain, checkpoints and the host's audit key.

The daemon (:mod:`agent.daemon.audit`) writes with it and the tools (:mod:`agent.tools.audit`)
verify with it, so both live above this module and neither imports the other.

Format (docs/security.md, "The audit log"):

- One JSON object per line in ``<stateDir>/audit/audit.jsonl``; rotated files are
  ``audit-<last seq, 12 digits>.jsonl`` (:func:`audit_files` lists them oldest first).
- A chained line has ``seq`` (1, 2, ... without gaps), ``prev`` (the previous chained line's
  ``hash``; :data:`GENESIS` for the first) and ``hash``: the SHA-256 hex of :func:`canonical` of
  the line without ``hash``.
- A checkpoint line ``{"event": "checkpoint", "seq", "hash", "kid", "sig"}`` stands outside the
  chain: ``sig`` is the Ed25519 signature (base64url, no padding) of :func:`checkpoint_message`,
  over the ``seq`` and ``hash`` of the last chained line before it.

Invariants: pure functions, except the file helpers :func:`load_or_create_key` (0600, atomic),
:func:`repair_tail` and :func:`last_chained`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from agent.core.atomicio import atomic_write
from agent.core.errors import KeyFormatError
from agent.jws.keys import SigningKey, VerifyKey, generate_keys, parse_signing_key

__all__ = [
    "CHECKPOINT",
    "CURRENT",
    "GENESIS",
    "KEY_FILE",
    "audit_files",
    "canonical",
    "checkpoint_line",
    "checkpoint_message",
    "checkpoint_valid",
    "last_chained",
    "line_hash",
    "load_or_create_key",
    "repair_tail",
    "rotated_name",
    "sha256_hex",
]

#: The ``prev`` of the very first chained line.
GENESIS: Final = "0" * 64
#: The event name of a signed checkpoint line (outside the chain).
CHECKPOINT: Final = "checkpoint"
#: The file being written.
CURRENT: Final = "audit.jsonl"
#: The most bytes of a file's end read back to find its last line.
TAIL_BYTES: Final = 1 << 20
#: The generated audit key, in ``<stateDir>`` (not in the audit directory).
KEY_FILE: Final = "audit.key"

_ROTATED = re.compile(r"^audit-(\d{12,})\.jsonl$")


def canonical(value: Any) -> bytes:
    """The canonical JSON bytes: sorted keys, no spaces, ASCII escapes (hashes and signatures)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256_hex(data: bytes | str) -> str:
    """SHA-256 hex of bytes, or of a string's UTF-8."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def line_hash(entry: Mapping[str, Any]) -> str:
    """The ``hash`` of a chained line: SHA-256 over the canonical JSON without ``hash``."""
    return sha256_hex(canonical({k: v for k, v in entry.items() if k != "hash"}))


def checkpoint_message(seq: int, hash_: str) -> bytes:
    """The bytes a checkpoint signs."""
    return canonical({"event": CHECKPOINT, "hash": hash_, "seq": seq})


def checkpoint_line(key: SigningKey, seq: int, hash_: str) -> dict[str, Any]:
    """A signed checkpoint for the chained line ``seq`` whose hash is ``hash_``."""
    sig = base64.urlsafe_b64encode(key.sign(checkpoint_message(seq, hash_))).rstrip(b"=")
    return {
        "event": CHECKPOINT,
        "hash": hash_,
        "kid": key.kid,
        "seq": seq,
        "sig": sig.decode(),
    }


def checkpoint_valid(entry: Mapping[str, Any], key: VerifyKey) -> bool:
    """Whether a checkpoint line's signature verifies with ``key`` (never raises)."""
    seq, hash_, sig = entry.get("seq"), entry.get("hash"), entry.get("sig")
    if not isinstance(seq, int) or not isinstance(hash_, str) or not isinstance(sig, str):
        return False
    try:
        raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    except (binascii.Error, ValueError):
        return False
    return key.verify(raw, checkpoint_message(seq, hash_))


def rotated_name(last_seq: int) -> str:
    """The name a full ``audit.jsonl`` is renamed to."""
    return f"audit-{last_seq:012d}.jsonl"


def audit_files(directory: Path) -> list[Path]:
    """The audit files in chain order: rotated ones by their last seq, then ``audit.jsonl``."""
    rotated: list[tuple[int, Path]] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        match = _ROTATED.match(name)
        if match:
            rotated.append((int(match.group(1)), directory / name))
    files = [p for _, p in sorted(rotated)]
    if (directory / CURRENT).exists():
        files.append(directory / CURRENT)
    return files


def load_or_create_key(state_dir: Path, configured: str = "") -> SigningKey:
    """The host's audit key: ``configured`` (``run.auditSigningKey``), else the key in
    ``<stateDir>/audit.key``, generated once (Ed25519, mode 0600) when missing.

    Raises:
        KeyFormatError: the configured or stored key does not parse, or is not Ed25519.
        OSError: the key file could not be read or written.
    """
    if configured:
        key = parse_signing_key(configured)
        where = "run.auditSigningKey"
    else:
        path = state_dir / KEY_FILE
        if not path.exists():
            state_dir.mkdir(parents=True, exist_ok=True)
            private, _ = generate_keys("ed25519", "audit")
            atomic_write(path, (private + "\n").encode(), mode=0o600)
        key = parse_signing_key(path.read_text(encoding="utf-8").strip())
        where = str(path)
    if not key.algorithm.startswith("ed25519"):
        raise KeyFormatError(f"{where}: expected an ed25519private key, got {key.algorithm}")
    return key


def repair_tail(path: Path) -> bytes:
    """Truncate a trailing partial line; return the bytes dropped (empty: nothing to do)."""
    with path.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return b""
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return b""
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            fh.seek(start)
            chunk = fh.read(pos - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            pos = start
        else:
            keep = 0
        fh.seek(keep)
        dropped = fh.read()
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return dropped


def last_chained(path: Path) -> tuple[int, str] | None:
    """The ``seq`` and ``hash`` of the last complete chained line of ``path``."""
    with path.open("rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - TAIL_BYTES))
        tail = fh.read()
    for raw in reversed(tail.split(b"\n")):
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("event") == CHECKPOINT:
            continue
        seq, hash_ = entry.get("seq"), entry.get("hash")
        if isinstance(seq, int) and isinstance(hash_, str):
            return seq, hash_
    return None
