"""`agent push`: build and sign a pattern (or an ad-hoc command), POST it to targets, print results.

Flow (reference etcha-run.md §6.6 with SPEC 14 fixes):

1. Targets: the config's ``targets`` whose ``sourcePatterns`` has the source as a key and whose
   name matches ``-n`` (unanchored search), sorted by name; or the single ad-hoc ``-h`` target.
2. Each target's pattern is its ``sourcePatterns[source]`` when non-empty, else the command-line
   argument. A value ending in ``.jsonnet`` is a pattern path; anything else is an ad-hoc command,
   embedded **as a JSON string** in ``{run:[{always:true, change:<cmd>, id:"etcha push"}]}``.
3. Build commands run **once per distinct pattern per push**, not once per target. Signing happens
   once per distinct set of target ``vars`` (they are laid over the runVars). Every signed push
   token gets a random ``jti`` and an ``exp`` of ``build.pushTokenExpiresIn`` (default 5m; a
   shorter pattern ``expiresIn`` wins), for the receiver's replay protection; Etcha ignores both.
4. At most ``--forks`` (``build.pushMaxWorkers``) targets are pushed at once; ``--serial N``
   pushes in batches of N and stops after a batch with a failure. ``--timeout``
   (``build.pushTimeout``, 2m) bounds each target's request: connect, TLS handshake and answer.
   Check mode and the parent-id filter travel as ``?check=true&filter=…``.
5. Output (:mod:`agent.tools.push_output`): each target's ``<target>:`` line and 4-space-indented
   lines (or one JSON object) as soon as that target finishes, then a recap line. Exit 1 when any
   target failed or was unreachable; 2 with ``--detailed-exitcode`` when something changed.

TLS verification is on by default; ``build.tlsSkipVerify`` or ``httpClient.tlsSkipVerify`` turn it
off; ``httpClient.caFile`` (or ``build.caFile``) adds a CA; ``httpClient.noSystemCA`` drops the
system store. A target with ``insecure: true``, or ``-h http://host``, uses plain HTTP (for a daemon
with ``run.tlsDisable``). A target with a ``fingerprint`` (``targets.<name>.fingerprint`` or
``--fingerprint``) is pinned instead: the SHA-256 of the DER certificate it presents must equal the
fingerprint, and neither a CA nor the host name is checked, so a daemon's self-signed certificate
works the first time. A failed verification names the three ways to trust a target.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent import __version__
from agent.config.schema import Config, format_go_duration
from agent.core.errors import AgentError, UsageError
from agent.core.logs import get_logger
from agent.core.paths import join_text
from agent.core.records import Record
from agent.jws.sign import b64url, etcha_claims
from agent.net.http import HTTPClient, RequestError, RequestTimeout, TLSVerifyError
from agent.net.tls import FingerprintMismatch, TLSOptions
from agent.pattern.load import LoadedPattern, load_from_disk, load_from_text
from agent.tools.build import collect_build, sign_claims
from agent.tools.push_output import (
    PushOutcome,
    Recap,
    exit_code,
    format_outcome,
    load_reporting,
    outcome_from_response,
    outcome_json,
    outcome_status,
)
from agent.tools.push_targets import (
    DEFAULT_PORT,
    DEFAULT_PUSH_PATH,
    PushTarget,
    ad_hoc_target,
    fingerprint_mismatch_message,
    no_targets_message,
    select_targets,
    tls_failure_message,
)
from agent.tools.syncrun import build_runs_commands, finish, signing_runs_commands

TYPE_CHECKING = False
if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor
    from os import PathLike
    from typing import Any, TextIO

__all__ = [
    "AD_HOC_ID",
    "DEFAULT_PORT",
    "DEFAULT_PUSH_PATH",
    "BuiltPush",
    "PushOptions",
    "PushOutcome",
    "PushTarget",
    "ad_hoc_pattern_text",
    "ad_hoc_target",
    "build_for_push",
    "check_regex",
    "client_options",
    "fingerprint_mismatch_message",
    "format_outcome",
    "no_targets_message",
    "outcome_from_response",
    "push",
    "push_expires_in",
    "push_sync",
    "run_push_cli",
    "select_targets",
    "sign_for_target",
    "tls_failure_message",
]

logger = get_logger(__name__)

AD_HOC_ID = "etcha push"
#: The largest push response read (a Result with its change outputs).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


def ad_hoc_pattern_text(command: str) -> str:
    """The Jsonnet for an ad-hoc command; the command is a JSON string literal (no injection).

    Args:
        command: the shell command.

    Returns:
        ``{run:[{always:true, change:"<cmd>", id:"etcha push"}]}`` as Jsonnet text.
    """
    return (
        "{run: [{always: true, change: "
        + json.dumps(command, ensure_ascii=True)
        + ", id: "
        + json.dumps(AD_HOC_ID)
        + "}]}"
    )


def client_options(config: Config) -> TLSOptions:
    """The TLS settings for push requests: verification on unless a tlsSkipVerify is set.

    Args:
        config: the loaded config (``build.tlsSkipVerify``/``build.caFile`` are aliases of
            ``httpClient.tlsSkipVerify``/``httpClient.caFile``).

    Returns:
        The options for :class:`agent.net.http.HTTPClient`.
    """
    client = config.http_client
    return TLSOptions(
        skip_verify=client.tls_skip_verify or config.build.tls_skip_verify,
        ca_file=client.ca_file or config.build.ca_file,
        no_system_ca=client.no_system_ca,
    )


@dataclass(frozen=True, repr=False, eq=False)
class BuiltPush(Record):
    """One pattern spec rendered and built for a push (``error`` set when that failed)."""

    loaded: LoadedPattern | None
    manifest: str
    run_vars: Mapping[str, Any]
    error: str


def build_for_push(
    spec: str, *, config: Config, cwd: str | PathLike[str], disable_external: bool
) -> tuple[BuiltPush, bool]:
    """Render and build one pattern spec once (a relative path starts at ``cwd``).

    Returns:
        (built, command_mode).
    """
    command_mode = not spec.endswith(".jsonnet")
    try:
        if command_mode:
            loaded = load_from_text(
                ad_hoc_pattern_text(spec),
                config=config,
                source="",
                disable_external=disable_external,
            )
        else:
            path = spec if spec.startswith("/") else join_text(cwd, spec)  # no pathlib
            loaded = load_from_disk(
                path, config=config, source="", disable_external=disable_external
            )
        manifest, run_vars = finish(collect_build(loaded), needs_loop=build_runs_commands(loaded))
    except AgentError as exc:
        return BuiltPush(None, "", {}, str(exc)), command_mode
    return BuiltPush(loaded, manifest, run_vars, ""), command_mode


def sign_for_target(built: BuiltPush, target: PushTarget, *, config: Config) -> str:
    if built.loaded is None:  # callers only sign successful builds
        raise AgentError("push: expected a built pattern to sign, got none")
    pattern = built.loaded.pattern
    run_vars = dict(built.run_vars)
    run_vars.update(target.vars)
    claims = etcha_claims(
        pattern_entrypoint=built.loaded.entrypoint,
        pattern_files=built.loaded.files,
        build_manifest=built.manifest,
        run_vars=run_vars,
        version=__version__,
        audience=pattern.audience,
        expires_in=push_expires_in(config, pattern.expires_in),
        issuer=pattern.issuer,
        subject=pattern.subject,
        jti=_random_jti(),  # replay protection: each signed push is unique
        now=time.time(),
    )
    return finish(sign_claims(claims, config=config), needs_loop=signing_runs_commands(config))


def _random_jti() -> str:
    """16 random bytes, base64url without padding (what ``secrets.token_urlsafe(16)`` returns)."""
    return b64url(os.urandom(16))


def push_expires_in(config: Config, pattern_expires_in: float) -> float:
    """Lifetime of a push token: ``build.pushTokenExpiresIn`` (default 5m), else the pattern's.

    Args:
        config: the loaded config.
        pattern_expires_in: the pattern's own ``expiresIn`` (seconds, 0 = none).

    Returns:
        Seconds until ``exp``; a shorter pattern ``expiresIn`` wins.
    """
    configured = float(config.build.push_token_expires_in or 0)
    if configured <= 0:
        return pattern_expires_in
    if pattern_expires_in > 0:
        return min(configured, pattern_expires_in)
    return configured


def _unreachable(target: PushTarget, reason: str) -> PushOutcome:
    return PushOutcome(target.name, error=reason, unreachable=True)


def _send(
    client: HTTPClient, target: PushTarget, url: str, token: str, *, timeout: float | None
) -> PushOutcome:
    """POST one token (in a worker thread) and interpret the answer.

    ``timeout`` bounds the whole exchange: connect, TLS handshake, request and response. The
    code that reads and prints the answer loads while the target works on the request.
    """
    try:
        resp = client.request(
            url,
            method="POST",
            headers=(("Content-Type", "application/jwt"),),
            body=token.encode("ascii", errors="replace"),
            timeout=timeout,
            max_bytes=MAX_RESPONSE_BYTES,
            fingerprint=target.fingerprint,
            on_sent=load_reporting,
        )
    except FingerprintMismatch as exc:  # reached, but not trusted: a failure, not unreachable
        return PushOutcome(
            target.name, error=fingerprint_mismatch_message(target, exc.expected, exc.got)
        )
    except TLSVerifyError as exc:
        reason = "error performing request: " + tls_failure_message(target, exc.reason)
        return PushOutcome(target.name, error=reason)
    except RequestTimeout:
        return _unreachable(
            target,
            f"timed out after {format_go_duration(timeout or 0)} waiting for "
            f"{target.hostname}:{target.port} (connect, TLS handshake and answer; --timeout "
            "or build.pushTimeout)",
        )
    except RequestError as exc:
        return _unreachable(target, f"error performing request: {exc}")
    return outcome_from_response(target.name, resp.status, resp.body)


@dataclass(frozen=True, repr=False, eq=False)
class PushOptions(Record):
    """How a push runs and reports (the ``push`` flags).

    Attributes:
        check: ``-c``: check mode on the targets.
        parent_filter: ``-f``: parent-id filter regex.
        timeout: ``--timeout`` seconds per target (None = ``build.pushTimeout``; 0 = no limit).
        forks: ``--forks``/``-j``: targets at once (None = ``build.pushMaxWorkers``).
        serial: ``--serial``: batch size; stop after a batch with a failure (None = one batch).
        json_output: one JSON object per target, then the recap object (``-f json``).
        detailed_exitcode: exit 2 when nothing failed but something changed.
        color: colour the ``ERROR:``/``UNREACHABLE:`` lines.
        verbose: ``-v``: print each command's output under its id.
    """

    check: bool = False
    parent_filter: str = ""
    timeout: float | None = None
    forks: int | None = None
    serial: int | None = None
    json_output: bool = False
    detailed_exitcode: bool = False
    color: bool = False
    verbose: bool = False


class _Printer:
    """Prints each outcome as it arrives (a block, or a JSON line) and counts it for the recap."""

    def __init__(self, out: TextIO, specs: Mapping[str, str], options: PushOptions) -> None:
        self.out = out
        self.specs = specs
        self.options = options
        self.recap = Recap()

    def emit(self, outcome: PushOutcome) -> None:
        self.recap.add(outcome)
        opts = self.options
        if opts.json_output:
            text = json.dumps(outcome_json(outcome, check=opts.check), ensure_ascii=False)
        else:
            command_mode = not self.specs.get(outcome.target, "").endswith(".jsonnet")
            text = format_outcome(
                outcome,
                check=opts.check,
                command_mode=command_mode,
                color=opts.color,
                verbose=opts.verbose,
            )
        self.out.write(text + "\n")
        self.out.flush()

    def finish(self) -> None:
        if self.options.json_output:
            self.out.write(json.dumps(self.recap.as_json()) + "\n")
        else:
            self.out.write(self.recap.line() + "\n")
        self.out.flush()


class _PushRun:
    """One push to many targets: signs once per distinct (spec, vars), sends with bounded workers.

    At most ``--forks`` (``build.pushMaxWorkers``) requests run at once, on a thread pool of that
    size; the calling thread signs (once per distinct spec and target vars, before the batch is
    sent) and prints each target's result as soon as it is known. With ``--serial N`` the
    targets go in batches of N, in name order, and a batch with a failed or unreachable target
    ends the push: the rest are reported as skipped. No event loop is involved. When at most one
    request can run at once (one target, ``--forks 1`` or ``--serial 1``) the calling thread
    sends it itself: no thread pool is started.
    """

    def __init__(
        self,
        config: Config,
        source: str,
        built: Mapping[str, tuple[BuiltPush, bool]],
        printer: _Printer,
        progress: TextIO | None,
    ) -> None:
        self.config = config
        self.source = source
        self.specs = printer.specs
        self.built = built
        self.printer = printer
        self.options = options = printer.options
        self.progress = progress
        self.client = HTTPClient(client_options(config))
        self.workers = max(1, options.forks or config.build.push_max_workers or _cpus())
        timeout = config.build.push_timeout if options.timeout is None else options.timeout
        self.timeout = timeout if timeout > 0 else None
        self.tokens: dict[tuple[str, str], str] = {}
        self.done = 0
        self.total = 0

    def all(self, targets: Sequence[PushTarget]) -> None:
        """Push to every target, printing each outcome as it arrives."""
        self.total = len(targets)
        for pinned in sorted({bool(t.fingerprint) for t in targets if t.scheme == "https"}):
            self.client.context(pinned=pinned)  # a bad caFile fails here, before any request
        size = self.options.serial or len(targets)
        batches = [targets[i : i + size] for i in range(0, len(targets), size)]
        pool = None
        if min(self.workers, size, len(targets)) > 1:  # else the calling thread sends
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="push")
        try:
            self._show_progress()
            for number, batch in enumerate(batches, start=1):
                results = self._batch(batch, pool)
                if any(outcome_status(o) in ("failed", "unreachable") for o in results):
                    self._skip(batches[number:], number, size)
                    break
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        self._clear_progress()

    def _batch(
        self, batch: Sequence[PushTarget], pool: ThreadPoolExecutor | None
    ) -> list[PushOutcome]:
        """Sign, then send the batch (on the pool, if any); report each outcome as it completes."""
        results: list[PushOutcome] = []
        pending: list[Future[PushOutcome]] = []
        for target in batch:
            ready = self._prepare(target)
            if not isinstance(ready, PushOutcome):
                if pool is not None:
                    pending.append(pool.submit(ready))
                    continue
                ready = ready()
            self._report(ready)
            results.append(ready)
        if pending:
            from concurrent.futures import as_completed

            for future in as_completed(pending):
                outcome = future.result()
                self._report(outcome)
                results.append(outcome)
        return results

    def _skip(self, batches: Sequence[Sequence[PushTarget]], number: int, size: int) -> None:
        reason = f"not pushed: batch {number} of --serial {size} had a failure"
        for batch in batches:
            for target in batch:
                self._report(PushOutcome(target.name, error=reason, skipped=True))

    def _show_progress(self) -> None:
        if self.progress is not None and self.total > 1:
            self.progress.write(f"\rPushing to {self.total} targets: {self.done}/{self.total} done")
            self.progress.flush()

    def _clear_progress(self) -> None:
        if self.progress is not None and self.total > 1:
            self.progress.write("\r\033[K")
            self.progress.flush()

    def _report(self, outcome: PushOutcome) -> None:
        self.done += 1
        self._clear_progress()  # the result line replaces the progress line, which follows it
        self.printer.emit(outcome)
        self._show_progress()

    def _prepare(self, target: PushTarget) -> PushOutcome | functools.partial[PushOutcome]:
        """The target's request (signed), or its outcome when there is nothing to send."""
        spec = self.specs[target.name]
        if not spec:
            return PushOutcome(target.name, error="no pattern or command given for this source")
        built, _ = self.built[spec]
        if built.error:
            return PushOutcome(target.name, error=built.error)
        key = (spec, json.dumps(dict(target.vars), sort_keys=True, default=str))
        try:
            if key not in self.tokens:
                self.tokens[key] = sign_for_target(built, target, config=self.config)
        except AgentError as exc:
            return PushOutcome(target.name, error=str(exc))
        opts = self.options
        url = target.url(self.source, check=opts.check, parent_filter=opts.parent_filter)
        logger.debug("Pushing %s to %s", self.source, url)
        return functools.partial(
            _send, self.client, target, url, self.tokens[key], timeout=self.timeout
        )


def _cpus() -> int:
    return os.cpu_count() or 1


async def push(config: Config, source: str, spec: str, **kwargs: Any) -> int:
    """:func:`push_sync` in a worker thread, for callers inside an event loop (same arguments)."""
    import asyncio

    return await asyncio.to_thread(functools.partial(push_sync, config, source, spec, **kwargs))


def push_sync(
    config: Config,
    source: str,
    spec: str,
    *,
    check: bool = False,
    parent_filter: str = "",
    host: str | None = None,
    port: str | None = None,
    path: str | None = None,
    target_filter: str | None = None,
    fingerprint: str | None = None,
    out: TextIO | None = None,
    progress: TextIO | None = None,
    color: bool = False,
    disable_external: bool = False,
    cwd: str | PathLike[str] | None = None,
    options: PushOptions | None = None,
) -> int:
    """Push ``spec`` (pattern path or command) for ``source`` to the selected targets.

    Args:
        config: the loaded config.
        source: the source name on the targets.
        spec: a ``*.jsonnet`` pattern path or an ad-hoc command ("" = use ``sourcePatterns``).
        check, parent_filter, color: shorthands for the same :class:`PushOptions` fields.
        host, port, path, target_filter, fingerprint: ``-h``, ``-p``, ``-u``, ``-n`` and
            ``--fingerprint`` (see :func:`agent.tools.push_targets.select_targets`).
        out, progress: results (stdout by default); a progress line for several targets.
        disable_external, cwd: no external natives; where relative pattern paths start.
        options: timeout, forks, serial, output format and exit codes (wins over the shorthands).

    Returns:
        The exit code (:func:`agent.tools.push_output.exit_code`).

    Raises:
        UsageError: bad ``-f``/``-n`` regex or ``--fingerprint``, or no target matches.
        ConfigError: ``httpClient.caFile`` cannot be loaded.
    """
    opts = options or PushOptions(check=check, parent_filter=parent_filter, color=color)
    check_regex("-f", opts.parent_filter)
    selection = {"host": host, "port": port, "path": path, "fingerprint": fingerprint}
    targets = select_targets(config, source, target_filter=target_filter, **selection)
    if not targets:
        raise UsageError(no_targets_message(config, source, spec, target_filter))
    # Build once per distinct pattern spec (SPEC 14), then sign per distinct target vars.
    specs = {t.name: (t.pattern or spec) for t in targets}
    built: dict[str, tuple[BuiltPush, bool]] = {}
    for s in sorted(set(specs.values()) - {""}):
        built[s] = build_for_push(
            s, config=config, cwd=cwd or os.getcwd(), disable_external=disable_external
        )
    printer = _Printer(out or sys.stdout, specs, opts)
    _PushRun(config, source, built, printer, progress).all(targets)
    printer.finish()
    return exit_code(printer.recap, detailed=opts.detailed_exitcode)


def check_regex(flag: str, pattern: str) -> None:
    if not pattern:
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{flag}: expected a regular expression, got {pattern!r}: {exc}") from exc


def run_push_cli(
    config: Config,
    source: str,
    words: Sequence[str],
    **kwargs: Any,
) -> int:
    """The CLI's entry: join ``words`` into the spec and run :func:`push_sync`.

    Args:
        config: the loaded config.
        source: the source name.
        words: the remaining command-line words (a pattern path, or a command's words).
        **kwargs: passed to :func:`push_sync`.

    Returns:
        The exit code.
    """
    return push_sync(config, source, " ".join(words), **kwargs)
