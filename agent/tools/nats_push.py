"""``agent push --nats`` and ``agent status --nats``: publish once, collect one reply per host.

Push: the pattern (or ad-hoc command) is built and signed once, exactly as for an HTTPS push
(:mod:`agent.tools.push`), and published once with a reply inbox to
``<prefix>.push.<source>`` (``.<host>`` with ``--host``). Check-mode pushes and ad-hoc commands
go to ``<prefix>.direct.…`` instead, which the JetStream stream does not capture, so they are
never stored (:mod:`agent.net.natsconn`). For a stored push the client first makes sure the stream
exists (``nats.stream``, ``MaxMsgsPerSubject: 1`` on ``<prefix>.push.>``), creating it and saying
so when it is missing.

Replies are printed as they arrive, with the HTTPS push's blocks and recap
(:mod:`agent.tools.push_output`): ``ok`` is changed or unchanged, ``failed`` and ``refused``
count as failed. Collection stops after ``--expect N`` replies (1 with ``--host``), at
``--timeout`` (10s), or once a reply has come and then nothing for the quiet period
(:data:`QUIET_SECONDS`). No reply at all exits 1.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agent.config.schema import Config
from agent.core.errors import AgentError, UsageError
from agent.net.natsconn import (
    CHECK_HEADER,
    FILTER_HEADER,
    KEY_HEADER,
    NATSSettings,
    connect,
    push_subjects,
    status_subject,
    stream_subjects,
)
from agent.run.result import Result
from agent.tools.push import PushOptions, PushTarget, build_for_push, check_regex, sign_for_target
from agent.tools.push_output import (
    PushOutcome,
    Recap,
    exit_code,
    format_outcome,
    outcome_json,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "QUIET_SECONDS",
    "NATSPushOptions",
    "collect_replies",
    "ensure_stream",
    "nats_push",
    "nats_status",
    "outcome_from_reply",
    "run_nats_push_cli",
]

#: ``--timeout`` default for NATS (seconds).
DEFAULT_TIMEOUT = 10.0
#: After the first reply, stop once no reply came for this long (seconds).
QUIET_SECONDS = 2.0
#: Replies read at most (bounds memory against a misbehaving publisher on the inbox).
MAX_REPLIES = 1_000_000
#: What a refused host's line says (the host's log has the reason; the reply never does).
REFUSED = "refused: the host's trust gate refused the token (its log says why)"


@dataclass(frozen=True, slots=True)
class NATSPushOptions:
    """The NATS flags: ``--host``, ``--expect``, ``--timeout`` and the quiet period."""

    host: str = ""
    expect: int | None = None
    timeout: float = DEFAULT_TIMEOUT
    quiet: float = QUIET_SECONDS


def _settings(config: Config) -> NATSSettings:
    if not config.nats.enabled:
        raise UsageError(
            "--nats: expected a nats section with servers in the config "
            "(nats: {servers: ['nats://127.0.0.1:4222']}), got none"
        )
    return NATSSettings.of(config.nats)


def outcome_from_reply(data: bytes) -> PushOutcome | None:
    """One host's reply as an outcome (``None``: not a host reply, e.g. a JetStream ack)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or "hostname" not in doc:
        return None
    host = str(doc.get("hostname") or "?")
    status = doc.get("status")
    if status == "refused":
        return PushOutcome(host, error=REFUSED)
    try:
        result = Result.from_json({k: v for k, v in doc.items() if k not in ("hostname", "status")})
    except (AgentError, TypeError, ValueError):
        return PushOutcome(host, error=f"undecodable reply (status {status!r})")
    error = result.err or ("" if status == "ok" else f"status {status!r}")
    return PushOutcome(
        host,
        error=error,
        has_result=True,
        changed_ids=result.changed_ids,
        changed_outputs=result.changed_outputs,
        removed_ids=result.removed_ids,
        result=result,
    )


async def collect_replies(
    sub: Any,
    on_reply: Callable[[bytes], bool],
    *,
    timeout: float,
    quiet: float,
    expect: int | None,
) -> int:
    """Read replies from ``sub`` until ``expect`` of them counted, ``timeout`` passed, or a
    reply came and then nothing for ``quiet`` seconds. ``on_reply`` says whether a message
    counts. Returns how many counted."""
    from nats.errors import TimeoutError as NATSTimeout  # lazy: nats-py

    deadline = time.monotonic() + timeout
    counted = 0
    for _ in range(MAX_REPLIES):
        if expect is not None and counted >= expect:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            break
        wait = min(left, quiet) if counted else left
        try:
            msg = await sub.next_msg(timeout=wait)
        except (NATSTimeout, TimeoutError):
            break
        if on_reply(msg.data):
            counted += 1
    return counted


async def ensure_stream(nc: Any, settings: NATSSettings, err: TextIO) -> bool:
    """Make sure the JetStream stream exists (create it, and say so, when missing).

    Returns:
        Whether the push can be stored (False: JetStream unavailable; warned on ``err``).
    """
    from nats.js.errors import NotFoundError  # lazy: nats-py

    js = nc.jetstream()
    try:
        await js.stream_info(settings.stream)
        return True
    except NotFoundError:
        pass
    except Exception as exc:
        err.write(
            f"WARNING: JetStream unavailable ({exc or type(exc).__name__}): the push reaches the "
            "hosts online now only; set nats.stream to '' to stop this warning\n"
        )
        return False
    subjects = stream_subjects(settings.subject_prefix)
    await js.add_stream(name=settings.stream, subjects=subjects, max_msgs_per_subject=1)
    err.write(
        f"Created JetStream stream {settings.stream} on {', '.join(subjects)} "
        "(last push per subject, for hosts that catch up)\n"
    )
    return True


async def _token(config: Config, spec: str, cwd: Path, disable_external: bool) -> tuple[str, bool]:
    # The build and signing steps are synchronous (they start their own loop only when they run
    # commands), so they run in a worker thread, off this loop.
    built, command_mode = await asyncio.to_thread(
        build_for_push, spec, config=config, cwd=cwd, disable_external=disable_external
    )
    if built.error:
        raise AgentError(built.error)
    target = PushTarget(name="nats", scheme="nats", hostname="", port="", path_push="")
    return await asyncio.to_thread(sign_for_target, built, target, config=config), command_mode


def _headers(options: PushOptions) -> dict[str, str]:
    headers: dict[str, str] = {}
    if options.check:
        headers[CHECK_HEADER] = "true"
    if options.parent_filter:
        headers[FILTER_HEADER] = options.parent_filter
    return headers


class _Printer:
    """Prints each reply as it arrives (a block, or a JSON line) and counts it for the recap."""

    def __init__(self, out: TextIO, options: PushOptions, command_mode: bool) -> None:
        self.out, self.options, self.command_mode = out, options, command_mode
        self.recap = Recap()
        self.stored_seq: int | None = None

    def emit(self, outcome: PushOutcome) -> None:
        self.recap.add(outcome)
        opts = self.options
        if opts.json_output:
            text = json.dumps(outcome_json(outcome, check=opts.check), ensure_ascii=False)
        else:
            text = format_outcome(
                outcome,
                check=opts.check,
                command_mode=self.command_mode,
                color=opts.color,
                verbose=opts.verbose,
            )
        self.out.write(text + "\n")
        self.out.flush()

    def finish(self) -> None:
        recap = self.recap.as_json() if self.options.json_output else self.recap.line()
        self.out.write((json.dumps(recap) if isinstance(recap, dict) else recap) + "\n")
        self.out.flush()


async def nats_push(
    config: Config,
    source: str,
    spec: str,
    *,
    options: PushOptions,
    nats_options: NATSPushOptions,
    out: TextIO | None = None,
    err: TextIO | None = None,
    disable_external: bool = False,
    cwd: Path | None = None,
) -> int:
    """Publish ``spec`` for ``source`` once over NATS; print each host's reply and the recap.

    Returns:
        The exit code (:func:`agent.tools.push_output.exit_code`; 1 when no host replied).

    Raises:
        UsageError: no ``nats`` section, no pattern or command, or a bad ``-f`` regex.
        AgentError: the pattern could not be built or signed, or NATS could not be reached.
    """
    settings = _settings(config)
    if not spec:
        raise UsageError("push --nats: expected a pattern path or a command, got none")
    check_regex("-f", options.parent_filter)
    errors = err or sys.stderr
    token, command_mode = await _token(config, spec, cwd or Path.cwd(), disable_external)
    stored = bool(settings.stream) and not options.check and not command_mode
    subject = push_subjects(settings.subject_prefix, source, nats_options.host, stored=stored)
    nc = await _connect(settings, nats_options.timeout)
    try:
        if stored:
            stored = await ensure_stream(nc, settings, errors)
        printer = _Printer(out or sys.stdout, options, command_mode)
        counted = await _publish_and_collect(nc, subject, token, options, nats_options, printer)
    finally:
        await nc.close()
    if printer.stored_seq is not None:
        errors.write(
            f"Stored as message {printer.stored_seq} of JetStream stream {settings.stream}: "
            "hosts offline now apply it when they connect\n"
        )
    if not counted:
        errors.write(
            f"ERROR: no host replied on {subject} within {nats_options.timeout:g}s (is a "
            f"host subscribed, with sources.{source}.allowNATS?)\n"
        )
    printer.finish()
    return 1 if not counted else exit_code(printer.recap, detailed=options.detailed_exitcode)


async def _connect(settings: NATSSettings, timeout: float) -> Any:
    return await connect(settings, name="agent push", timeout=min(timeout, 5.0) or 5.0)


def _stream_seq(data: bytes) -> int | None:
    """The sequence in a JetStream publish ack (``{"stream": …, "seq": N}``), else None."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(doc, dict) and "stream" in doc and isinstance(doc.get("seq"), int):
        return int(doc["seq"])
    return None


async def _publish_and_collect(
    nc: Any,
    subject: str,
    token: str,
    options: PushOptions,
    nats_options: NATSPushOptions,
    printer: _Printer,
) -> int:
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)

    def on_reply(data: bytes) -> bool:
        outcome = outcome_from_reply(data)
        if outcome is None:
            printer.stored_seq = _stream_seq(data) or printer.stored_seq
            return False  # the JetStream ack, or a no-responders notice
        printer.emit(outcome)
        return True

    expect = nats_options.expect or (1 if nats_options.host else None)
    await nc.publish(subject, token.encode(), reply=inbox, headers=_headers(options) or None)
    await nc.flush()
    return await collect_replies(
        sub, on_reply, timeout=nats_options.timeout, quiet=nats_options.quiet, expect=expect
    )


async def nats_status(
    config: Config, *, timeout: float, expect: int | None = None, quiet: float = QUIET_SECONDS
) -> dict[str, Any]:
    """Ask ``<prefix>.status``; every host's document, keyed by host name.

    The client config's ``run.systemMetricsKey`` travels as ``Authorization: Bearer`` (hosts with a
    key answer only to it).
    """
    settings = _settings(config)
    nc = await _connect(settings, timeout)
    answers: dict[str, Any] = {}

    def on_reply(data: bytes) -> bool:
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return False
        if not isinstance(doc, dict) or not isinstance(doc.get("status"), dict):
            return False
        answers[str(doc.get("hostname") or "?")] = doc["status"]
        return True

    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        key = config.run.system_metrics_key
        headers = {KEY_HEADER: f"Bearer {key}"} if key else None
        await nc.publish(status_subject(settings.subject_prefix), b"", reply=inbox, headers=headers)
        await nc.flush()
        await collect_replies(sub, on_reply, timeout=timeout, quiet=quiet, expect=expect)
    finally:
        await nc.close()
    return answers


def run_nats_push_cli(
    config: Config, source: str, words: list[str], **kwargs: Any
) -> int:  # pragma: no cover - thin wrapper
    """Synchronous wrapper for the CLI."""
    return asyncio.run(nats_push(config, source, " ".join(words), **kwargs))
