"""The audit log writer: one hash-chained JSON line per event, fsynced, rotated, checkpointed.

What is recorded (issue 18, docs/security.md "The audit log"): ``admit``/``refuse`` for every
token the gate sees (it is the gate's :class:`~agent.trust.gate.GateObserver`), ``run`` for each
finished run (:meth:`AuditLog.record_run`, which also puts the receipt on the Result), ``start``,
``stop``, ``reload``, ``revocations`` (:meth:`AuditLog.record_revocations`), ``repair`` after a
crash, and whatever a caller passes to :meth:`AuditLog.record`. The format is
:mod:`agent.jws.audit`'s.

Durability: each line is one ``write`` of the whole line to a file opened ``O_APPEND``, then
fsynced. :meth:`AuditLog.arecord` (the async path) returns once an fsync that started after its
line was written has finished: with no fsync in flight it starts one at once (in a worker thread);
lines written while one is in flight wait for it and then share the next one, which covers every
line written so far (group commit without a fixed delay; bench/bench_audit.py measures it).
The synchronous path (:meth:`AuditLog.record`, the gate's callbacks) schedules that same fsync on
the running loop :data:`SYNC_DEFER` seconds later without waiting: a push's ``admit`` line is then
covered by the fsync its ``run`` line waits for (one fsync per push, not two), and a line nobody
waits for is still on disk within ``SYNC_DEFER`` plus one fsync. The write itself is immediate,
so the chain and its order do not depend on when the fsync runs. Without a running loop
:meth:`AuditLog.record` fsyncs before it returns.

Start-up (the first record): a trailing partial line (a crash during a write) is truncated,
logged and recorded as a ``repair`` event; the chain continues from the last complete line.

Never recorded: a token (only ``tokenSha256``), a key, vars (only ``patternSha256`` of the
canonical ``etchaPattern``) or command output (only each output's length and SHA-256; the run
error has outputs replaced by the same summary).

Invariants: ``seq`` strictly increases by one per chained line; the writer never rewrites a line
except the partial one the repair drops; no module-level state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agent.core.errors import AgentError, ConfigError
from agent.daemon.journal import JournalSink
from agent.jws.audit import (
    CHECKPOINT,
    CURRENT,
    GENESIS,
    audit_files,
    canonical,
    checkpoint_line,
    last_chained,
    line_hash,
    load_or_create_key,
    repair_tail,
    rotated_name,
    sha256_hex,
)
from agent.trust.gate import AdmittedToken, Context

if TYPE_CHECKING:
    from agent.config.schema import Config
    from agent.jws.keys import SigningKey
    from agent.run.result import Result

__all__ = [
    "GROUP_WINDOW",
    "SYNC_DEFER",
    "AuditLog",
    "NoAudit",
    "Receipt",
    "audit_session",
    "open_audit",
    "output_summary",
    "scrub_error",
]

logger = logging.getLogger(__name__)

#: Seconds an async writer waits before its first fsync (0: group commit on the fsync in flight).
GROUP_WINDOW: Final = 0.0
#: Seconds before the fsync of a line recorded synchronously (a push's ``run`` line, within this
#: time, covers its ``admit`` line).
SYNC_DEFER: Final = 0.1
#: The most ids kept per list in a ``run`` line (the count is always exact).
MAX_IDS: Final = 256
#: The longest string kept in a line (longer ones are cut, with their SHA-256 beside).
MAX_TEXT: Final = 1024


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a pusher keeps: the ``seq`` and ``hash`` of the ``run`` line of its push."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


def _now_text(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"... (sha256 {sha256_hex(text)})"


def output_summary(output: str) -> dict[str, Any]:
    """What the log keeps of a command output: its length and SHA-256, never its text."""
    data = output.encode("utf-8", "replace")
    return {"bytes": len(data), "sha256": sha256_hex(data)}


def scrub_error(err: str, outputs: Iterable[str]) -> str:
    """The run error with every command output in it replaced by its length and SHA-256."""
    for text in sorted({o for o in outputs if o.strip()}, key=len, reverse=True):
        if text in err:
            summary = output_summary(text)
            err = err.replace(
                text, f"(output: {summary['bytes']} bytes, sha256 {summary['sha256']})"
            )
    return _cut(err)


def _remote(origin: str) -> str:
    """``from 10.0.0.7`` -> ``10.0.0.7``; a pull's URL or ``(cached)`` is no remote address."""
    rest = origin.removeprefix("from ")
    if rest == origin or "://" in rest or " " in rest:
        return ""
    return rest


def _token_fields(token: AdmittedToken) -> dict[str, Any]:
    pattern = token.verified.claims.get("etchaPattern")
    return {
        "kid": token.key_id,
        "chain": list(token.chain_key_ids),
        "action": token.action.value if token.action is not None else None,
        "jti": token.jti,
        "iat": token.iat,
        "exp": token.exp,
        "tokenSha256": sha256_hex(token.raw),
        "patternSha256": sha256_hex(canonical(pattern)) if pattern is not None else None,
    }


def _ids(values: tuple[str, ...]) -> list[str]:
    return [_cut(v) for v in values[:MAX_IDS]]


def run_fields(result: Result, duration: float) -> dict[str, Any]:
    """The ``result`` object of a ``run`` line (ids, error without output, outputs' digests)."""
    outputs = (*result.changed_outputs, *result.removed_outputs, *result.failed_outputs)
    out: dict[str, Any] = {
        "changed": _ids(result.changed_ids),
        "removed": _ids(result.removed_ids),
        "failed": _ids(result.failed_ids),
        "error": scrub_error(result.err, outputs),
        "durationMs": round(duration * 1000),
    }
    digests = [
        {"id": _cut(i), **output_summary(o)}
        for i, o in zip(
            (*result.changed_ids, *result.removed_ids),
            (*result.changed_outputs, *result.removed_outputs),
            strict=False,  # check mode: ids without outputs
        )
        if o
    ]
    if digests:
        out["outputs"] = digests[:MAX_IDS]
    return out


class AuditLog:
    """The append-only, hash-chained audit log of one host (see the module docstring).

    Args:
        directory: the audit directory (``<stateDir>/audit``).
        key: returns the checkpoint signing key (called once, at the first record).
        max_bytes: rotate before a line would make the file larger.
        keep: files kept, the current one included.
        checkpoint_every: chained lines between two checkpoints.
        journal: also send every entry there (``run.auditJournal``).
        clock: Unix time.
        window: seconds an async record waits before its fsync (0: none; see the module doc).
        defer: seconds before the fsync of a synchronous record when a loop runs.
    """

    def __init__(
        self,
        directory: Path,
        *,
        key: Callable[[], SigningKey],
        max_bytes: int = 64 << 20,
        keep: int = 8,
        checkpoint_every: int = 100,
        journal: JournalSink | None = None,
        clock: Callable[[], float] = time.time,
        window: float = GROUP_WINDOW,
        defer: float = SYNC_DEFER,
    ) -> None:
        self.directory = directory
        self._key_fn = key
        self._key: SigningKey | None = None
        self.max_bytes = max_bytes
        self.keep = max(1, keep)
        self.checkpoint_every = max(1, checkpoint_every)
        self.journal = journal
        self._clock = clock
        self._window = window
        self._defer = defer
        self._flushing: asyncio.Future[None] | None = None
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._fd = -1
        self._size = 0
        self._seq = 0
        self._hash = GENESIS
        self._since_checkpoint = 0
        self._writes = 0
        self._synced = 0
        self._retired: list[int] = []
        self._pending: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ opening and repair

    def open(self) -> None:
        """Open the log now (repair, load the key, continue the chain); idempotent.

        Raises:
            ConfigError: the audit key or directory is unusable.
        """
        with self._lock:
            self._open_locked()

    def _open_locked(self) -> None:
        if self._fd >= 0:
            return
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._key = self._key_fn()
            path = self.directory / CURRENT
            dropped = repair_tail(path) if path.exists() else b""
            last = self._find_last()
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._size = os.fstat(self._fd).st_size
        except (OSError, AgentError) as exc:  # AgentError: an audit key that does not parse
            raise ConfigError(
                f"audit log in {self.directory}: expected a usable log and key, got {exc}"
            ) from exc
        if last is not None:
            self._seq, self._hash = last
        if dropped:
            logger.warning(
                "Audit: truncated a partial last line (%d bytes) a crash left in %s",
                len(dropped),
                path,
            )
            self._append_locked(
                "repair",
                {
                    "file": CURRENT,
                    "droppedBytes": len(dropped),
                    "droppedSha256": sha256_hex(dropped),
                },
            )

    def _find_last(self) -> tuple[int, str] | None:
        for path in reversed(audit_files(self.directory)):
            last = last_chained(path)
            if last is not None:
                return last
        return None

    # ------------------------------------------------------------------ writing

    @property
    def seq(self) -> int:
        """The ``seq`` of the last chained line (0: none yet)."""
        return self._seq

    def record(self, event: str, **fields: Any) -> Receipt:
        """Append one event (``fields`` become its keys; empty values are left out).

        Durable before returning when no event loop runs in this thread; otherwise the fsync is
        scheduled on the loop (see the module docstring).
        """
        with self._lock:
            self._open_locked()
            receipt = self._append_locked(event, fields)
            written = self._writes
        self._durable_soon(written)
        return receipt

    async def arecord(self, event: str, **fields: Any) -> Receipt:
        """Append one event and wait until it is fsynced (shared with lines written meanwhile)."""
        with self._lock:
            self._open_locked()
            receipt = self._append_locked(event, fields)
            written = self._writes
        await self._durable(written)
        return receipt

    def _append_locked(self, event: str, fields: Mapping[str, Any]) -> Receipt:
        if event == CHECKPOINT or not event:
            raise ValueError(
                f"audit event: expected a name other than {CHECKPOINT!r}, got {event!r}"
            )
        entry: dict[str, Any] = {
            "seq": self._seq + 1,
            "time": _now_text(self._clock()),
            "event": event,
        }
        entry.update((k, v) for k, v in fields.items() if v not in (None, "", [], ()))
        entry["prev"] = self._hash
        entry["hash"] = line_hash(entry)
        data = _line(entry)
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate_locked()
        self._write_locked(data)
        self._seq, self._hash = entry["seq"], entry["hash"]
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.checkpoint_every:
            self._checkpoint_locked()
        if self.journal is not None:
            self.journal.send(entry)
        return Receipt(entry["seq"], entry["hash"])

    def _write_locked(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # one write; a short write (disk full) continues where it stopped
            done = os.write(self._fd, view)
            view = view[done:]
        self._size += len(data)
        self._writes += 1

    def _checkpoint_locked(self) -> None:
        if self._seq == 0 or self._key is None:
            return
        self._write_locked(_line(checkpoint_line(self._key, self._seq, self._hash)))
        self._since_checkpoint = 0

    def _rotate_locked(self) -> None:
        """Rename the full file to ``audit-<seq>.jsonl``, start a new one, drop the oldest."""
        if self._since_checkpoint:
            self._checkpoint_locked()
        os.fsync(self._fd)
        self._retired.append(self._fd)  # closed by the next fsync (it may be using it now)
        current = self.directory / CURRENT
        os.replace(current, self.directory / rotated_name(self._seq))
        self._fd = os.open(current, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = 0
        _fsync_dir(self.directory)
        files = audit_files(self.directory)
        for old in files[: max(0, len(files) - self.keep)]:
            old.unlink(missing_ok=True)
            logger.info("Audit: removed %s (run.auditKeep %d)", old.name, self.keep)
        logger.info("Audit: rotated the log at seq %d", self._seq)

    # ------------------------------------------------------------------ durability

    def sync(self, upto: int | None = None) -> None:
        """fsync until write number ``upto`` (default: every write so far) is on disk.

        Group commit: the caller that gets the lock fsyncs for every line written before it.
        """
        with self._sync_lock:
            with self._lock:
                target = self._writes if upto is None else upto
                if self._synced >= target or self._fd < 0:
                    return
                fd, written, retired = self._fd, self._writes, self._retired
                self._retired = []
            os.fsync(fd)
            self._synced = max(self._synced, written)
            for old in retired:
                os.close(old)

    def _durable_soon(self, written: int) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.sync(written)
            return
        task = loop.create_task(self._durable(written, self._defer))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _durable(self, written: int, delay: float | None = None) -> None:
        """Return once write number ``written`` is fsynced (group commit, module doc)."""
        if self._synced >= written:
            return
        wait = self._window if delay is None else delay
        if wait:
            await asyncio.sleep(wait)
        # At most two rounds: the fsync in flight may have started before our write; the next
        # one starts after it, so it covers it.
        for _ in range(2):
            if self._synced >= written:
                return
            flush = self._flushing
            if flush is None or flush.get_loop() is not asyncio.get_running_loop():
                flush = self._flushing = asyncio.ensure_future(self._flush())
            await asyncio.shield(flush)

    async def _flush(self) -> None:
        try:
            await asyncio.to_thread(self.sync)
        finally:
            self._flushing = None

    def close(self) -> None:
        """A last checkpoint, fsync and close (the ``stop`` event is the caller's)."""
        with self._lock:
            if self._fd < 0:
                return
            if self._since_checkpoint:
                self._checkpoint_locked()
        self.sync()
        with self._lock:
            for fd in (*self._retired, self._fd):
                os.close(fd)
            self._retired, self._fd = [], -1
        if self.journal is not None:
            self.journal.close()

    async def aclose(self) -> None:
        """Drop the deferred fsyncs (:meth:`close` fsyncs everything), then :meth:`close`."""
        for task in self._pending:
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await asyncio.to_thread(self.close)

    # ------------------------------------------------------------------ the events

    def admitted(self, token: AdmittedToken, origin: str) -> None:
        """The gate admitted ``token`` (:class:`~agent.trust.gate.GateObserver`)."""
        if token.context is Context.OFFLINE:
            return
        self._observed(
            "admit",
            source=token.source,
            context=token.context.value,
            remoteAddr=_remote(origin),
            origin=origin,
            **_token_fields(token),
        )

    def refused(self, source: str, context: Context, reason: str, key_id: str, origin: str) -> None:
        """The gate refused a token (:class:`~agent.trust.gate.GateObserver`)."""
        if context is Context.OFFLINE:
            return
        self._observed(
            "refuse",
            source=source,
            context=context.value,
            remoteAddr=_remote(origin),
            origin=origin,
            reason=reason,
            kid=key_id,
        )

    def _observed(self, event: str, **fields: Any) -> None:
        """A gate callback: a write error is logged, never raised into the admission."""
        try:
            self.record(event, **fields)
        except (OSError, AgentError) as exc:
            logger.error("Audit: %s of %s not recorded: %s", event, fields.get("source"), exc)

    async def record_run(
        self,
        source: str,
        token: AdmittedToken | None,
        *,
        trigger: str,
        remote: str,
        result: Result,
        duration: float,
        check: bool,
    ) -> Result:
        """Record a run; return ``result`` with its receipt (``auditSeq``, ``auditHash``)."""
        fields: dict[str, Any] = {
            "source": source,
            "context": token.context.value if token is not None else Context.RUN.value,
            "trigger": trigger,
            "remoteAddr": remote,
            "check": check or None,
        }
        if token is not None:
            fields.update(_token_fields(token))
        fields["result"] = run_fields(result, duration)
        try:
            receipt = await self.arecord("run", **fields)
        except (OSError, AgentError) as exc:
            logger.error("Audit: run of %s not recorded: %s", source, exc)
            return result
        return dataclasses.replace(result, audit_seq=receipt.seq, audit_hash=receipt.hash)

    def record_revocations(
        self, source: str, *, revoked: Iterable[str], origin: str = "", **fields: Any
    ) -> Receipt:
        """A revocation list was applied (``revoked``: the key ids or jtis it revokes)."""
        return self.record(
            "revocations", source=source, origin=origin, revoked=sorted(revoked), **fields
        )


class NoAudit:
    """``run.audit: false``: records nothing (the same methods as :class:`AuditLog`)."""

    def open(self) -> None:
        """Do nothing."""

    def record(self, event: str, **fields: Any) -> None:
        """Do nothing."""

    def admitted(self, token: AdmittedToken, origin: str) -> None:
        """Do nothing."""

    def refused(self, source: str, context: Context, reason: str, key_id: str, origin: str) -> None:
        """Do nothing."""

    async def record_run(
        self,
        source: str,
        token: AdmittedToken | None,
        *,
        trigger: str,
        remote: str,
        result: Result,
        duration: float,
        check: bool,
    ) -> Result:
        """Return ``result`` unchanged."""
        return result

    def record_revocations(
        self, source: str, *, revoked: Iterable[str], origin: str = "", **fields: Any
    ) -> None:
        """Do nothing."""

    async def aclose(self) -> None:
        """Do nothing."""


def _line(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_audit(config: Config) -> AuditLog | NoAudit:
    """The audit log ``config`` asks for (nothing is opened yet; the first record opens it).

    Off with ``run.audit: false`` or without a ``run.stateDir`` (a config built in memory).
    """
    run = config.run
    if not run.audit or not run.state_dir:
        return NoAudit()
    state_dir = Path(run.state_dir)
    return AuditLog(
        state_dir / "audit",
        key=lambda: load_or_create_key(state_dir, run.audit_signing_key),
        max_bytes=run.audit_max_bytes,
        keep=run.audit_keep,
        checkpoint_every=run.audit_checkpoint_every,
        journal=JournalSink() if run.audit_journal else None,
    )


@contextlib.asynccontextmanager
async def audit_session(log: AuditLog | NoAudit, **fields: Any) -> AsyncIterator[None]:
    """``agent run``: open the log (repairing it), record ``start``; at the end ``stop``, a last
    checkpoint and close. Raises ConfigError when the log cannot be opened."""
    await asyncio.to_thread(log.open)
    log.record("start", pid=os.getpid(), **fields)
    try:
        yield
    finally:
        log.record("stop", pid=os.getpid())
        await log.aclose()
