"""`agent run`: sources, start-up restore, the pull loop, diff-run and the daemon lifecycle.

Responsibility: everything between "a token arrived" (push, pull, state file) and "its commands ran
and the state was saved". HTTP framing is :mod:`agent.daemon.server`; fetching is
:mod:`agent.net.fetch`;
persistence is :mod:`agent.daemon.state`.

Start-up (reference etcha-run.md §4.2, SPEC 6 and 21):

1. Refuse to start when a source that accepts tokens (``allowPush`` or ``pullPaths``) has neither
   verify keys (``run.verifyKeys`` or its own) nor verify commands.
2. Load every source's pattern before anything runs, in source-name order: static ``commands``
   first; then, unless ``noRestore``, ``<stateDir>/<source>.jwt`` **verified again** and rendered,
   replacing the static commands. A cached token that no longer verifies is logged and not run.
3. Sleep a random ``0..run.randomizedStartDelaySec`` seconds.
4. Run each source once in source-name order (``init``): pull when it has ``pullPaths`` (falling
   back to the stored token), else its stored pattern; ``triggerOnly`` sources run nothing.
5. Start the listener (unless ``-o``), notify systemd ``READY=1`` and schedule each source with a
   ``runFrequency`` on an APScheduler 3.x ``AsyncIOScheduler``.

Diff-run (§4.4): verify → render the verified claims only (in a worker thread) → under the source's
lock (none with ``runMulti``) diff against the stored pattern and run → Result. A request in check
mode (``?check=true``) changes nothing and saves nothing. ``checkOnly`` sources run only checks
(their Result lists the drift) but, as in Etcha, still record the accepted token. State is saved
only after a successful run, atomically (``StateStore``), unless ``noRestore``.

Pull (§4.5): paths in order; requests are conditional on the ETag/Last-Modified that came with the
token in hand, and a 304 (or identical bytes from a file) reuses that token without verifying it
again. A new token replaces the stored one only when it verifies and differs by manifest, pattern
files or version (``pullIgnoreVersion``). Every tick re-runs the checks (drift correction).

Lifecycle: SIGTERM/SIGINT stop the listener, wait (bounded) for in-flight runs, and exit 0; state is
written by each run as it finishes, so an interrupted run leaves the previous state in place.
SIGHUP re-reads the config: later runs use it (keys, exec, vars, source flags), added sources are
loaded and removed ones unscheduled, running sources keep their token and pattern, and the log
says what changed. Listener settings (address, TLS, body limit) need a restart.

Invariants: one :class:`asyncio.Lock` per source; without ``runMulti`` concurrent runs queue on it
(never dropped). All mutable runtime state lives on a :class:`Daemon` instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import secrets
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from agent.core.errors import AgentError, ConfigError, SourceError, VerifyError
from agent.daemon.server import PushReply

if TYPE_CHECKING:
    import ssl

    import aiohttp

    from agent.config.schema import Config
    from agent.daemon.metrics import Metrics
    from agent.daemon.state import ReplayCache, SourceMeta, StateStore
    from agent.jws.tokens import VerifiedToken
    from agent.run.engine import CommandObserver, Result, RunOutcome
    from agent.run.model import Command, Exec

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long shutdown waits for in-flight runs before cancelling them.
SHUTDOWN_GRACE_SECONDS = 30.0
#: Most push jtis remembered for replay protection (entries also expire with their token).
REPLAY_CACHE_CAP = 10_000


def _raw_iat(raw: str) -> int | None:
    """The ``iat`` of a stored token, decoded without trusting it (only to keep a mark)."""
    from agent.jws.tokens import decode_token

    try:
        iat = decode_token(raw).claims.get("iat")
    except AgentError:
        return None
    return int(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else None


@dataclass(frozen=True, slots=True)
class StoredPattern:
    """The pattern a source last accepted (or its static commands).

    Attributes:
        run: the run commands.
        run_exec: the resolved exec (config ⊕ source ⊕ pattern runExec).
        origin: ``static``, ``cached``, ``push`` or ``pull`` (for logs).
    """

    run: tuple[Command, ...]
    run_exec: Exec
    origin: str


class _RefusedUnderLock(AgentError):
    """The trust policy refused a token on its re-check under the source lock (logged, counted).

    A push answers it with the same empty 404 as every other refusal; a pull run reports it.
    """


@dataclass(frozen=True, slots=True)
class _Pulled:
    """The last token a pull verified, with the validators that came with it."""

    token: VerifiedToken
    etag: str
    last_modified: str


class EventDispatcher(Protocol):
    """Dispatches a run's events to receiving sources (:class:`agent.daemon.events.Events`)."""

    async def dispatch(
        self,
        daemon: Daemon,
        source: str,
        outcome: RunOutcome,
        *,
        public_key: str = "",
        remote_addr: str = "",
    ) -> bool:
        """Run receivers for ``outcome``'s events; return the Result ``exit`` flag."""
        ...

    async def fire(
        self,
        daemon: Daemon,
        source: str,
        name: str,
        output: str,
        *,
        public_key: str = "",
        remote_addr: str = "",
    ) -> bool:
        """Fire a system event (``pull``, ``push``) about ``source``; return the exit flag."""
        ...


class _SourceRuntime:
    """Mutable per-source state, owned by one :class:`Daemon`."""

    __slots__ = (
        "lock",
        "meta",
        "name",
        "pattern",
        "pulled",
        "save_lock",
        "stale",
        "static",
        "token",
    )

    def __init__(self, name: str, meta: SourceMeta) -> None:
        self.name = name
        self.lock = asyncio.Lock()
        #: Serialises mark computation and state writes, also with ``runMulti``.
        self.save_lock = asyncio.Lock()
        self.token: VerifiedToken | None = None
        self.meta = meta
        self.pattern: StoredPattern | None = None
        #: The source's config commands, the pattern it falls back to when a token is withdrawn.
        self.static: StoredPattern | None = None
        self.pulled: _Pulled | None = None
        #: Whether the token in hand was over ``maxTokenAge`` at the last pull (freeze warning).
        self.stale = False


#: The id of the one command an ad-hoc push carries (``agent push src 'cmd'`` and Etcha's client).
ADHOC_COMMAND_ID = "etcha push"


def is_adhoc(commands: tuple[Command, ...]) -> bool:
    """Whether a rendered pattern is an ad-hoc command line (SPEC 30): exactly one command,
    with the id ``etcha push`` and no sub-commands. Such a pattern runs once: it is not diffed,
    stored, re-run on ticks, and it does not move the rollback mark."""
    return len(commands) == 1 and commands[0].id == ADHOC_COMMAND_ID and not commands[0].commands


def _utc_text(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def same_pattern(a: VerifiedToken, b: VerifiedToken, *, ignore_version: bool) -> bool:
    """Etcha's ``Equal``: same manifest, same pattern files, same version (unless ignored).

    Args:
        a: one token.
        b: the other token.
        ignore_version: ``pullIgnoreVersion``.

    Returns:
        Whether ``b`` would not replace ``a``. runVars are not compared (as in Etcha).
    """
    if a.build_manifest != b.build_manifest:
        return False
    if not ignore_version and a.version != b.version:
        return False
    if a.pattern_entrypoint != b.pattern_entrypoint:
        return False
    return dict(a.pattern_files or {}) == dict(b.pattern_files or {})


def check_verifiers(config: Config) -> None:
    """Refuse a config where a source accepts tokens but nothing could verify them.

    Args:
        config: the loaded config.

    Raises:
        ConfigError: naming the first such source.
    """
    from agent.trust.verify import has_verifier

    for name in sorted(config.sources):
        src = config.sources[name]
        if not (src.allow_push or src.pull_paths):
            continue
        if not has_verifier(config, name):
            how = "allowPush" if src.allow_push else "pullPaths"
            raise ConfigError(
                f"sources.{name}: accepts tokens ({how}) so it needs run.verifyKeys, "
                f"sources.{name}.verifyKeys or verifyCommands, got none"
            )


def check_state_dir(path: Path) -> None:
    """Fail fast when ``run.stateDir`` cannot be created or written (before anything runs).

    A daemon that cannot save what it accepted would forget it at the next restart, so this is
    checked at start-up rather than at the first save. Creates the directory (0700) when missing
    and writes and removes a probe file.

    Args:
        path: the resolved state directory.

    Raises:
        SourceError: naming the path and the OS error.
    """
    import os
    import tempfile

    if path.exists() and not path.is_dir():
        raise SourceError(
            f"run.stateDir {str(path)!r}: expected a directory, got a path that exists and is not "
            "a directory"
        )
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".agent-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SourceError(
            f"run.stateDir {str(path)!r}: expected a directory the agent can create and write, "
            f"got {exc.strerror or exc}"
        ) from exc


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """Split ``run.listenAddress``: ``:4000`` (all interfaces), ``127.0.0.1:4000``, ``[::1]:4000``.

    Args:
        address: the configured address.

    Returns:
        ``(host or None for all interfaces, port)``.

    Raises:
        ConfigError: not ``[host]:port`` with a numeric port.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(
            f"run.listenAddress: expected [host]:port such as ':4000', got {address!r}"
        )
    host = host.strip("[]")
    return (host or None), int(port_text)


#: Run in a short-lived child so the daemon never maps the ``cryptography`` library (~10 MB RSS).
#: It reuses or creates ``<stateDir>/tls/`` and prints where the pair is (or the error) as JSON.
_SELF_SIGNED_SCRIPT = """
import json, socket, sys
from pathlib import Path
from agent.core.errors import AgentError
from agent.net.tlsutil import ensure_listener_certificate
host = socket.gethostname()
try:
    cert = ensure_listener_certificate(Path(sys.argv[1]), [host] if host else [])
except AgentError as exc:
    json.dump({"error": str(exc)}, sys.stdout)
else:
    json.dump(cert.to_dict(), sys.stdout)
"""


def _self_signed_pair(directory: Path) -> tuple[Path, Path, bool]:
    """Reuse or create the listener's pair in ``directory``; log what happened.

    Returns:
        ``(cert_path, key_path, created)``.

    Raises:
        ConfigError: the directory or the files cannot be written.
    """
    import json
    import socket
    import subprocess
    import sys

    from agent.net.tlsutil import ListenerCertificate, ensure_listener_certificate

    try:
        child = subprocess.run(
            [sys.executable, "-c", _SELF_SIGNED_SCRIPT, str(directory)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        doc = json.loads(child.stdout)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            raise ConfigError(doc["error"])
        cert = ListenerCertificate.from_dict(doc)
    except (OSError, subprocess.SubprocessError, ValueError, AttributeError) as exc:
        logger.warning("Certificate helper process failed (%s); running it in-process", exc)
        host = socket.gethostname()
        cert = ensure_listener_certificate(directory, [host] if host else [])
    for warning in cert.warnings:
        logger.warning("Listener certificate: %s", warning)
    return cert.cert_path, cert.key_path, cert.created


def _listener_ssl(config: Config) -> ssl.SSLContext:
    """The listener's TLS context (SPEC 16): configured material, else the persistent one.

    Without configured material the self-signed certificate (SANs: localhost, 127.0.0.1, ::1,
    the host name) lives in ``<stateDir>/tls/``: generated once (key 0600, atomically), reused
    at every start, and replaced with a warning when missing, corrupt or expiring. A child
    Python process checks or generates it when possible, so the long-running daemon never
    loads ``cryptography``. Either way the certificate's fingerprint is logged
    (``sha256:<hex>``, what ``agent fingerprint`` prints and clients pin).

    Args:
        config: the loaded config (``run.tls*``, ``run.stateDir``).

    Returns:
        A server context, minimum TLS 1.2.

    Raises:
        ConfigError: half-configured or unusable certificate material, or an unwritable
            ``<stateDir>/tls``.
    """
    import ssl

    from agent.net.tlsutil import fingerprint_pem, listener_fingerprint, server_ssl_context, tls_dir

    run = config.run
    configured = (
        run.tls_certificate_path
        or run.tls_key_path
        or run.tls_certificate_base64
        or run.tls_key_base64
    )
    if configured:
        ctx = server_ssl_context(
            cert_path=run.tls_certificate_path,
            key_path=run.tls_key_path,
            cert_b64=run.tls_certificate_base64,
            key_b64=run.tls_key_base64,
        )
        fingerprint = listener_fingerprint(
            cert_path=run.tls_certificate_path, cert_b64=run.tls_certificate_base64
        )
        logger.info("Listener certificate fingerprint: %s (configured)", fingerprint)
        return ctx
    cert_path, key_path, created = _self_signed_pair(tls_dir(run.state_dir or "."))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_path), str(key_path))
        fingerprint = fingerprint_pem(cert_path.read_bytes(), what=str(cert_path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"listener certificate: expected a usable pair in {cert_path.parent}, got {exc}"
        ) from exc
    how = "generated" if created else "reused"
    logger.info(
        "Listener certificate fingerprint: %s (self-signed, %s, %s)", fingerprint, how, cert_path
    )
    return ctx


def _empty_result(err: str = "") -> Result:
    from agent.run.engine import Result

    return Result(err=err)


class Daemon:
    """Sources, their runs and their state, for one config.

    Args:
        config: the loaded config.
        state: the state store (default: ``StateStore(config.run.state_dir)``).
        observer: metrics hook passed to every command run.
        events: event dispatcher (default: none; :class:`agent.daemon.events.Events` in ``agent
        run``).
        disable_external: disable external Jsonnet natives when rendering tokens.
        metrics: Prometheus metrics (runs, commands, pulls, verify failures); replaces
            ``observer`` for command runs when set.
    """

    def __init__(
        self,
        config: Config,
        *,
        state: StateStore | None = None,
        observer: CommandObserver | None = None,
        events: EventDispatcher | None = None,
        disable_external: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        from agent.daemon.state import SourceMeta, StateStore

        self.config = config
        self.state = state or StateStore(
            Path(config.run.state_dir or "."), max_token_bytes=config.run.max_token_bytes
        )
        self.observer = observer
        self.events = events
        self.disable_external = disable_external
        self.metrics = metrics
        self._sources = {name: _SourceRuntime(name, SourceMeta()) for name in config.sources}
        self._inflight: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._scheduler: Any = None
        self._replay: ReplayCache | None = None  # push jtis (trust policy), loaded in load()
        self._replay_lock = asyncio.Lock()
        self._replay_generation = 0  # bumped for every jti remembered
        self._replay_saved = 0  # the generation the replay file on disk holds

    # ------------------------------------------------------------------ accessors

    @property
    def source_names(self) -> list[str]:
        """Configured source names, sorted."""
        return sorted(self._sources)

    def stored_pattern(self, source: str) -> StoredPattern | None:
        """The pattern a source would run now (for events and webhooks)."""
        rt = self._sources.get(source)
        return rt.pattern if rt else None

    def stored_token(self, source: str) -> VerifiedToken | None:
        """The token a source last accepted (restored, pushed or pulled)."""
        rt = self._sources.get(source)
        return rt.token if rt else None

    # ------------------------------------------------------------------ start-up

    async def load(self) -> None:
        """Load every source's pattern (static, then cached and re-verified), in name order.

        Raises:
            ConfigError: a token-accepting source has no verifier (nothing is loaded then).
        """
        check_verifiers(self.config)
        try:
            removed = await asyncio.to_thread(self.state.remove_stale_temp_files)
        except OSError as exc:
            logger.warning("State directory: stale temporary files not removed: %s", exc)
        else:
            for path in removed:
                logger.info("Removed a temporary file a crashed write left: %s", path)
        await self._load_policy()
        for name in self.source_names:
            await self._load_source(name)

    async def _load_source(self, name: str) -> None:
        from agent.config.execs import source_exec
        from agent.pattern.load import load_from_token
        from agent.run.model import parse_commands
        from agent.trust.verify import verify_for_source

        src = self.config.sources[name]
        rt = self._sources[name]
        if src.commands:
            try:
                cmds = parse_commands(list(src.commands), where=f"sources.{name}.commands")
                rt.pattern = StoredPattern(cmds, source_exec(self.config, name), "static")
                rt.static = rt.pattern
                logger.info("Loading config commands for %s", name)
            except AgentError as exc:
                logger.error("Source %s: static commands not loaded: %s", name, exc)
        if src.no_restore:
            return
        try:
            stored = await asyncio.to_thread(self.state.load, name)
        except AgentError as exc:
            logger.error("Source %s: cached token not restored: %s", name, exc)
            return
        if stored is None:
            return
        # The rollback mark survives even when the cached token is not restored (it expired,
        # its key was removed, the policy refuses it): a later push or pull is still judged
        # against it. The token file is written before the meta file, so the stored token's own
        # iat also counts (a crash between the two writes, or a lost meta file).
        stored_iat = _raw_iat(stored.token)
        marks = [m for m in (stored.meta.high_water_iat, stored_iat) if m is not None]
        from agent.daemon.state import SourceMeta

        rt.meta = SourceMeta(high_water_iat=max(marks) if marks else None)
        try:
            # SPEC 31: exp/nbf (and maxTokenAge) guarded the delivery; the stored token is
            # re-admitted by signature, keys, key windows, allowedKeys and verifyCommands only.
            token = await verify_for_source(
                stored.token, config=self.config, source=name, check_times=False
            )
        except VerifyError as exc:
            logger.error(
                "Source %s: cached token no longer verifies (%s: %s); not running it",
                name,
                exc.reason,
                exc,
            )
            self._count_verify_failure(name, exc.reason)
            return
        except AgentError as exc:
            logger.error("Source %s: cached token could not be verified: %s", name, exc)
            return
        if not self._policy_ok(name, token, "restore", high_water_iat=stored.meta.high_water_iat):
            return
        try:
            loaded = await asyncio.to_thread(
                load_from_token,
                token,
                config=self.config,
                source=name,
                disable_external=self.disable_external,
            )
        except AgentError as exc:
            logger.error("Source %s: cached token did not render: %s", name, exc)
            return
        logger.info("Loading cached config for %s", name)
        if token.exp and token.exp < time.time():
            logger.info(
                "Source %s: the stored token expired at %s; it stays applied until a newer one "
                "is accepted",
                name,
                _utc_text(token.exp),
            )
        rt.token = token
        rt.meta = dataclasses.replace(stored.meta, high_water_iat=rt.meta.high_water_iat)
        rt.pattern = StoredPattern(loaded.pattern.run, loaded.run_exec, "cached")
        if stored.meta.etag or stored.meta.last_modified:
            rt.pulled = _Pulled(token, stored.meta.etag, stored.meta.last_modified)

    async def init_runs(self) -> dict[str, Result]:
        """Run every source once, in name order (the start-up run and ``-o``).

        Returns:
            Each source's Result (``err`` set when it failed).
        """
        results: dict[str, Result] = {}
        for name in self.source_names:
            if self._stopping:
                break
            results[name] = await self.tracked(self.run_source(name, init=True))
        return results

    # ------------------------------------------------------------------ runs

    async def tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` as a task that shutdown waits for; a caller's cancel does not stop it.

        Args:
            coro: the run.

        Returns:
            The coroutine's value.
        """
        task: asyncio.Task[T] = asyncio.get_running_loop().create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    def _track_task(self, task: asyncio.Task[Any]) -> None:
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def run_source(self, name: str, *, init: bool = False) -> Result:
        """Pull (when the source has pullPaths) and diff-run the source (Etcha ``runSource``).

        Args:
            name: the source.
            init: the start-up run (logs say so).

        Returns:
            The Result; ``err`` set on failure.
        """
        src = self.config.sources[name]
        rt = self._sources[name]
        token = rt.token
        trigger = "init" if init else "pull"
        if src.pull_paths:
            pulled = await self.pull(name)
            if pulled is not None:
                if token is None or not same_pattern(
                    token, pulled.token, ignore_version=src.pull_ignore_version
                ):
                    logger.info("Source %s: pulled a new token", name)
                    token = pulled.token
            elif token is not None:
                logger.warning("Source %s: no pull path gave a token; using the stored token", name)
            elif rt.pattern is None:
                return _empty_result(
                    f"source {name}: expected a verified token from a pull path or state, got none"
                )
        if token is not None and token is rt.token and rt.pattern is not None:
            token = None  # the stored token: run its stored pattern (drift correction)
        if token is None and not await self.readmit(name):
            return _empty_result(f"source {name}: the stored token is no longer accepted")
        try:
            return await self.diff_exec(
                name, token, trigger=trigger, meta=self._meta_for(name, token)
            )
        except _RefusedUnderLock as exc:
            return _empty_result(str(exc))

    async def readmit(self, name: str) -> bool:
        """Re-admit the source's stored token before its pattern runs again (SPEC 31).

        The token is verified against the current configuration (keys, key windows,
        ``allowedKeys``, ``verifyCommands``) but not by ``exp``/``nbf``/``maxTokenAge``: those
        guard delivery, not storage. A token that no longer passes is withdrawn: the source
        falls back to its config commands (or nothing), the refusal is logged and counted with
        its reason, and the rollback mark stays.

        Args:
            name: the source.

        Returns:
            Whether the source may run its stored pattern (``True`` without a stored token).
        """
        from agent.trust.verify import verify_for_source

        rt = self._sources.get(name)
        if rt is None or rt.token is None:
            return True
        token = rt.token
        try:
            await verify_for_source(token.raw, config=self.config, source=name, check_times=False)
        except VerifyError as exc:
            if rt.token is token:
                rt.token = None
                rt.pattern = rt.static
                rt.pulled = None
            logger.error(
                "Source %s: the stored token is no longer accepted (%s: %s); its pattern stops "
                "running until a new one is accepted",
                name,
                exc.reason,
                exc,
            )
            self._count_verify_failure(name, exc.reason)
            return False
        except AgentError as exc:
            logger.error("Source %s: the stored token could not be verified again: %s", name, exc)
            return False
        return True

    async def admitted_pattern(self, name: str) -> StoredPattern | None:
        """The pattern events and webhooks may run now: the stored one, re-admitted first."""
        if not await self.readmit(name):
            return None
        return self.stored_pattern(name)

    def _meta_for(self, name: str, token: VerifiedToken | None) -> SourceMeta | None:
        from agent.daemon.state import SourceMeta

        rt = self._sources[name]
        if token is None:
            return None
        if rt.pulled is not None and rt.pulled.token is token:
            return dataclasses.replace(
                rt.meta, etag=rt.pulled.etag, last_modified=rt.pulled.last_modified
            )
        return dataclasses.replace(rt.meta or SourceMeta(), etag="", last_modified="")

    async def pull(self, name: str) -> _Pulled | None:
        """Try each pull path in order; the first that yields a verified token wins.

        A 304 (or a file whose bytes equal the token in hand) reuses the token in hand without
        downloading or verifying it again.

        Args:
            name: the source.

        Returns:
            The pulled token with its validators, or ``None`` when every path failed (logged).
        """
        import aiohttp

        src = self.config.sources[name]
        previous = self._sources[name].pulled
        async with aiohttp.ClientSession() as session:
            pulled = await self._pull_paths(name, src.pull_paths, session)
        await self._after_pull(name, previous, pulled)
        return pulled

    async def _after_pull(
        self, name: str, previous: _Pulled | None, pulled: _Pulled | None
    ) -> None:
        """Count the pull in ``agent_pull_total`` and fire the ``pull`` system event."""
        if pulled is None:
            outcome = "error"
        elif previous is not None and pulled.token is previous.token:
            outcome = "not_modified"
        else:
            outcome = "fetched"
        self._metric("pull", name, outcome)
        if self.events is not None:
            key_id = pulled.token.key_id if pulled is not None else ""
            try:
                await self.events.fire(self, name, "pull", outcome, public_key=key_id)
            except AgentError as exc:
                logger.error("Source %s: pull event failed: %s", name, exc)

    async def _pull_paths(
        self, name: str, paths: tuple[str, ...], session: aiohttp.ClientSession
    ) -> _Pulled | None:
        from agent.net.fetch import fetch_path, is_http, safe_url
        from agent.trust.verify import verify_for_source

        rt = self._sources[name]
        client = self.config.http_client
        current = rt.pulled
        for path in paths:
            shown = safe_url(path) if is_http(path) else path
            try:
                fetched = await fetch_path(
                    path,
                    session=session,
                    etag=current.etag if current else "",
                    last_modified=current.last_modified if current else "",
                    tls_skip_verify=client.tls_skip_verify,
                    ca_file=client.ca_file,
                    no_system_ca=client.no_system_ca,
                    max_bytes=self.config.run.max_token_bytes,
                    follow_cross_origin=client.follow_cross_origin_redirects,
                )
            except AgentError as exc:
                logger.error("Source %s: pull path %s failed: %s", name, shown, exc)
                continue
            if fetched.status == "not_modified" or fetched.body is None:
                if current is not None:
                    logger.info(
                        "Source %s: %s not modified; keeping the token in hand", name, shown
                    )
                    self._check_freeze(name, current.token, f"pull from {shown} (not modified)")
                    return current
                logger.error("Source %s: %s answered 304 but no token is in hand", name, shown)
                continue
            raw = fetched.body.strip()
            if current is not None and raw == current.token.raw:
                pulled = _Pulled(current.token, fetched.etag, fetched.last_modified)
                rt.pulled = pulled
                self._check_freeze(name, current.token, f"pull from {shown} (same token)")
                return pulled
            try:
                token = await verify_for_source(raw, config=self.config, source=name)
            except VerifyError as exc:
                logger.error(
                    "Source %s: token from %s did not verify (%s: %s)", name, shown, exc.reason, exc
                )
                self._count_verify_failure(name, exc.reason)
                continue
            except AgentError as exc:
                logger.error("Source %s: token from %s could not be verified: %s", name, shown, exc)
                continue
            if not self._policy_ok(name, token, f"pull from {shown}"):
                continue  # the last good pattern keeps running
            rt.stale = False
            pulled = _Pulled(token, fetched.etag, fetched.last_modified)
            rt.pulled = pulled
            return pulled
        logger.error("Source %s: no valid token from any pull path", name)
        return None

    def _check_freeze(self, name: str, token: VerifiedToken, via: str) -> None:
        """Freeze protection on a pull that brought nothing new (304 or the same token).

        A server that keeps serving one token past ``maxTokenAge`` is the freeze attack the
        setting exists for: the refusal is logged and counted as ``stale`` on every such pull.
        The token in hand is already applied and keeps running (SPEC 31).
        """
        from agent.trust.policy import PolicyError, check_stale

        rt = self._sources[name]
        try:
            check_stale(token, self.config.sources.get(name), source_name=name)
        except PolicyError as exc:
            rt.stale = True
            self._refused(name, exc, via)
            return
        rt.stale = False

    async def diff_exec(
        self,
        name: str,
        token: VerifiedToken | None,
        *,
        check: bool = False,
        parent_id_filter: re.Pattern[str] | None = None,
        trigger: str = "push",
        meta: SourceMeta | None = None,
        remote: str = "",
    ) -> Result:
        """Diff-run a source (:meth:`_diff_exec`), then record metrics and fire ``push``.

        ``etcha_sources_total`` rises by exactly one per run that had something to run (a token
        or a stored pattern); ``etcha_sources_commands`` is set after a successful non-check
        run; ``agent_pattern_expires_in_seconds`` follows the stored token. A non-check push of
        a verified token fires the ``push`` system event with the Result as compact JSON.

        Args:
            name: the source.
            token: a verified token, or ``None`` to run the stored pattern.
            check: a check-mode request.
            parent_id_filter: restrict runs to matching parent ids.
            trigger: ``push``, ``pull`` or ``init``.
            meta: metadata to store with ``token``.
            remote: the pusher's address (metrics labels, ``ETCHA_EVENT_SRC``).

        Returns:
            The Result.
        """
        from agent.core.gojson import dumps_compact

        runnable = token is not None or self.stored_pattern(name) is not None
        result, adhoc = await self._diff_exec(
            name,
            token,
            check=check,
            parent_id_filter=parent_id_filter,
            trigger=trigger,
            meta=meta,
            remote=remote,
        )
        key_id = self._key_id(name, token)
        if runnable:
            self._metric("source_run", name, trigger, bool(result.err), key_id, remote)
            if not result.err and not check and not adhoc:
                self._metric(
                    "set_source_commands",
                    name,
                    trigger,
                    changed=len(result.changed_ids),
                    removed=len(result.removed_ids),
                    public_key=key_id,
                    remote_addr=remote,
                )
            stored = self.stored_token(name)
            self._metric("pattern_expiry", name, stored.exp if stored is not None else None)
        if trigger == "push" and token is not None and not check and self.events is not None:
            output = dumps_compact(result.to_json()).decode("utf-8")
            try:
                if await self.events.fire(
                    self, name, "push", output, public_key=key_id, remote_addr=remote
                ):
                    result = dataclasses.replace(result, exit=True)
            except AgentError as exc:
                logger.error("Source %s: push event failed: %s", name, exc)
        return result

    def _key_id(self, name: str, token: VerifiedToken | None) -> str:
        """The configured id of the key behind a run (the stored token's when ``token`` is None)."""
        if token is None:
            token = self.stored_token(name)
        return token.key_id if token is not None else ""

    def _metric(self, hook: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``self.metrics.<hook>`` when metrics are attached (and have that hook)."""
        method = getattr(self.metrics, hook, None)
        return method(*args, **kwargs) if callable(method) else None

    def _observer_for(self, name: str, token: VerifiedToken | None, remote: str) -> Any:
        """The command observer of one run: per-source metrics labels, else ``observer``."""
        observer = self._metric(
            "command_observer", name, public_key=self._key_id(name, token), remote_addr=remote
        )
        return observer if observer is not None else self.observer

    async def _diff_exec(
        self,
        name: str,
        token: VerifiedToken | None,
        *,
        check: bool = False,
        parent_id_filter: re.Pattern[str] | None = None,
        trigger: str = "push",
        meta: SourceMeta | None = None,
        remote: str = "",
    ) -> tuple[Result, bool]:
        """Render ``token`` (or take the stored pattern), diff against the stored one, run, save.

        An ad-hoc token (:func:`is_adhoc`) runs once under the source lock, as a first run of its
        one command: nothing is diffed or removed, nothing is saved, and the source's stored token,
        pattern and rollback mark stay as they were.

        Args:
            name: the source.
            token: a verified token, or ``None`` to run the stored pattern (no removals).
            check: a check-mode request: run checks only, save nothing.
            parent_id_filter: restrict runs to matching parent ids.
            trigger: ``push``, ``pull`` or ``init`` (logs).
            meta: metadata to store with ``token`` (pull validators).

        Returns:
            The Result (``err`` is set when rendering, a command or saving failed), and whether
            the token was an ad-hoc command.
        """
        from agent.pattern.load import load_from_token

        rt = self._sources[name]
        new: StoredPattern | None
        adhoc = False
        if token is not None:
            try:
                loaded = await asyncio.to_thread(
                    load_from_token,
                    token,
                    config=self.config,
                    source=name,
                    disable_external=self.disable_external,
                )
            except AgentError as exc:
                logger.error("Source %s: token did not render: %s", name, exc)
                return _empty_result(str(exc)), False
            new = StoredPattern(loaded.pattern.run, loaded.run_exec, trigger)
            adhoc = is_adhoc(new.run)
        else:
            new = rt.pattern
            if new is None:
                logger.debug("Source %s: no pattern with runnable commands", name)
                return _empty_result(), False
        result = await self._run_locked(
            name,
            token,
            new,
            adhoc=adhoc,
            check=check,
            parent_id_filter=parent_id_filter,
            trigger=trigger,
            meta=meta,
            remote=remote,
        )
        return result, adhoc

    async def _run_locked(
        self,
        name: str,
        token: VerifiedToken | None,
        new: StoredPattern,
        *,
        adhoc: bool,
        check: bool,
        parent_id_filter: re.Pattern[str] | None,
        trigger: str,
        meta: SourceMeta | None,
        remote: str,
    ) -> Result:
        """Under the source lock: re-check the mark, diff-run ``new``, save, dispatch events."""
        from agent.run.engine import Result, diff_run

        src = self.config.sources[name]
        rt = self._sources[name]

        lock: contextlib.AbstractAsyncContextManager[Any] = (
            contextlib.nullcontext() if src.run_multi else rt.lock
        )
        async with lock:
            if token is not None and not self._policy_ok(name, token, f"{trigger} (under lock)"):
                raise _RefusedUnderLock(f"source {name}: token refused by the trust policy")
            old = rt.pattern if token is not None and not adhoc else None
            check_mode = check or src.check_only
            outcome: RunOutcome | None = None
            if adhoc:
                logger.info(
                    "Running ad-hoc command for %s (%s); the stored pattern stays", name, trigger
                )
            elif not src.trigger_only:
                logger.info("Diffing Pattern for %s (%s)", name, trigger)
            if adhoc or not src.trigger_only:
                try:
                    outcome = await diff_run(
                        new.run,
                        old.run if old is not None else None,
                        exec=new.run_exec,
                        check=check_mode,
                        no_remove=src.no_remove,
                        source=name,
                        parent_id_filter=parent_id_filter,
                        observer=self._observer_for(name, token, remote),
                    )
                except AgentError as exc:
                    logger.error("Source %s: run failed: %s", name, exc)
                    return _empty_result(str(exc))
                if outcome.error is not None:
                    result = Result.from_outcome(outcome, check=check_mode)
                    logger.error("Source %s: run failed: %s", name, outcome.error)
                    if not check:
                        result = dataclasses.replace(
                            result,
                            exit=await self._dispatch(name, outcome, token=token, remote=remote),
                        )
                    return result
                if check:
                    return Result.from_outcome(outcome, check=True)
            if adhoc and outcome is not None:  # runs once: no save, the stored pattern stays
                result = Result.from_outcome(outcome, check=check_mode)
                exit_ = await self._dispatch(name, outcome, token=token, remote=remote)
                return dataclasses.replace(result, exit=exit_) if exit_ else result
            # Check mode saves no state: a checkOnly source keeps the accepted pattern in memory
            # (event and webhook handlers run it, as in Etcha) but writes nothing to stateDir.
            if token is not None and not src.no_restore and not check_mode:
                try:
                    await self._save(name, token, meta)
                except AgentError as exc:
                    logger.error("Source %s: state not saved: %s", name, exc)
                    return _empty_result(str(exc))
            if token is not None:
                rt.token = token
            rt.pattern = new
            if outcome is None:
                return _empty_result()
            result = Result.from_outcome(outcome, check=check_mode)
            exit_ = await self._dispatch(name, outcome, token=token, remote=remote)
            return dataclasses.replace(result, exit=exit_) if exit_ else result

    async def _save(self, name: str, token: VerifiedToken, meta: SourceMeta | None) -> None:
        """Store ``token`` and move the rollback mark, serialised per source (also with runMulti).

        The mark is computed under the save lock as the largest of the mark in memory now, the
        mark ``meta`` carried (taken before the run) and the token's ``iat``, so a concurrent push
        and pull, or ``allowRollback``, can never lower it.
        """
        from agent.trust.policy import next_high_water

        rt = self._sources[name]
        async with rt.save_lock:
            base = meta or dataclasses.replace(rt.meta, etag="", last_modified="")
            marks = [m for m in (rt.meta.high_water_iat, base.high_water_iat) if m is not None]
            high = next_high_water(max(marks) if marks else None, token)
            new_meta: SourceMeta = dataclasses.replace(
                base, high_water_iat=high, accepted_at=time.time()
            )
            logger.info("Saving JWT for %s", name)
            await asyncio.to_thread(self.state.save, name, token.raw, new_meta)
            rt.meta = new_meta

    # ------------------------------------------------------------------ trust policy

    async def _load_policy(self) -> None:
        """Start-up: warn about verify keys near ``notAfter``; restore the push replay cache."""
        from agent.daemon.state import ReplayCache
        from agent.trust.policy import expiring_keys

        for key in expiring_keys(self.config):
            label = key.key_id or "(no id)"
            when = key.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
            if key.seconds_left < 0:
                logger.warning("%s: key %s retired at %s (notAfter)", key.where, label, when)
            else:
                days = key.seconds_left / 86400
                logger.warning(
                    "%s: key %s retires at %s (notAfter, in %.1f days)",
                    key.where,
                    label,
                    when,
                    days,
                )
        if self._replay is None:
            self._replay = ReplayCache(REPLAY_CACHE_CAP)
            try:
                entries = await asyncio.to_thread(self.state.load_replay)
            except AgentError as exc:
                logger.error("Replay cache not restored: %s", exc)
                return
            self._replay.restore(entries)

    def _count_verify_failure(self, source: str, reason: str) -> None:
        """Count a refusal in ``agent_verify_failures_total`` when a metrics hook is attached."""
        metrics = getattr(self, "metrics", None)
        hook = getattr(metrics, "verify_failure", None)
        if callable(hook):
            hook(source, reason)

    def _refused(self, source: str, exc: VerifyError, via: str) -> None:
        """One log line and one metric for a trust-policy refusal."""
        key_id = getattr(exc, "key_id", "") or "(unknown)"
        logger.error(
            "Source %s: %s refused (reason %s, key %s): %s", source, via, exc.reason, key_id, exc
        )
        self._count_verify_failure(source, exc.reason)

    def _policy_ok(
        self,
        name: str,
        token: VerifiedToken,
        via: str,
        *,
        high_water_iat: int | None = None,
    ) -> bool:
        """Apply the trust policy to an accepted token (restore: rollback only); log refusals."""
        from agent.trust.policy import PolicyError, check_rollback, check_token

        src = self.config.sources.get(name)
        rt = self._sources.get(name)
        mark = (
            high_water_iat
            if high_water_iat is not None
            else (rt.meta.high_water_iat if rt else None)
        )
        try:
            if via == "restore":  # allowlist and key windows were applied by verify
                check_rollback(token, src, source_name=name, high_water_iat=mark)
            else:
                check_token(token, config=self.config, source=name, high_water_iat=mark)
        except PolicyError as exc:
            self._refused(name, exc, via)
            return False
        return True

    async def _push_policy_ok(self, source: str, token: VerifiedToken, remote: str) -> bool:
        """The push checks (policy, required jti/exp, replay); persists the replay cache."""
        from agent.daemon.state import ReplayCache
        from agent.trust.policy import PolicyError, check_push

        rt = self._sources[source]
        if self._replay is None:
            self._replay = ReplayCache(REPLAY_CACHE_CAP)
        try:
            check_push(
                token,
                config=self.config,
                source=source,
                high_water_iat=rt.meta.high_water_iat,
                replay=self._replay,
            )
        except PolicyError as exc:
            self._refused(source, exc, f"push from {remote}")
            return False
        if token.jti:
            self._replay_generation += 1
            await self._save_replay(self._replay_generation)
        return True

    async def _save_replay(self, generation: int) -> None:
        """Write the replay cache so that a stale snapshot never replaces a newer one.

        Writes are serialised on one lock and the snapshot is taken under it, after the wait:
        each write holds every ``jti`` remembered before it. A caller whose generation an earlier
        write already covered returns without writing (one write serves a burst of pushes).

        Args:
            generation: the cache generation this caller needs on disk.
        """
        if self._replay is None:
            return
        async with self._replay_lock:
            if self._replay_saved >= generation:
                return
            current = self._replay_generation
            snapshot = self._replay.snapshot()
            try:
                await asyncio.to_thread(self.state.save_replay, snapshot)
            except AgentError as exc:
                logger.error("Replay cache not saved (kept in memory): %s", exc)
                return
            self._replay_saved = current

    async def _dispatch(
        self, name: str, outcome: RunOutcome, *, token: VerifiedToken | None, remote: str
    ) -> bool:
        if self.events is None:
            return False
        try:
            return await self.events.dispatch(
                self, name, outcome, public_key=self._key_id(name, token), remote_addr=remote
            )
        except AgentError as exc:
            logger.error("Source %s: event dispatch failed: %s", name, exc)
            return False

    # ------------------------------------------------------------------ push

    async def handle_push(
        self,
        source: str,
        token: str,
        *,
        check: bool,
        parent_id_filter: re.Pattern[str] | None,
        remote: str,
    ) -> PushReply:
        """Verify and run a pushed token (see :class:`agent.daemon.server.PushHandler`).

        Args:
            source: the source in the URL.
            token: the raw JWT body.
            check: ``?check=true``.
            parent_id_filter: ``?filter=``.
            remote: the client address (logs).

        Returns:
            404 (empty) for an unknown source, no allowPush or no verification; else 200 or 500
            with the Result.
        """
        from agent.trust.verify import verify_for_source

        src = self.config.sources.get(source)
        if src is None:
            logger.error("Push from %s refused: unknown source %r", remote, source)
            # Counted under source "" so a client cannot mint label values.
            self._count_verify_failure("", "not_allowed")
            return PushReply(404)
        if not src.allow_push:
            logger.error("Push from %s refused: source %s does not allowPush", remote, source)
            self._count_verify_failure(source, "not_allowed")
            return PushReply(404)
        if self._stopping:
            logger.error("Push from %s for %s refused: shutting down", remote, source)
            return PushReply(503, _empty_result("agent is shutting down").to_json())
        try:
            verified = await verify_for_source(token, config=self.config, source=source)
        except VerifyError as exc:
            logger.error(
                "Push from %s for %s refused: token did not verify (%s: %s)",
                remote,
                source,
                exc.reason,
                exc,
            )
            self._count_verify_failure(source, exc.reason)
            return PushReply(404)
        except AgentError as exc:
            logger.error("Push from %s for %s refused: %s", remote, source, exc)
            return PushReply(404)
        if not await self._push_policy_ok(source, verified, remote):
            return PushReply(404)  # byte-identical to every other refusal: no oracle
        timeout = float(self.config.run.timeout_push or 0) or None
        task = asyncio.get_running_loop().create_task(
            self.diff_exec(
                source,
                verified,
                check=check,
                parent_id_filter=parent_id_filter,
                trigger="push",
                remote=remote,
            )
        )
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        try:
            result = await asyncio.wait_for(asyncio.shield(task), timeout)
        except _RefusedUnderLock:
            return PushReply(404)  # byte-identical to every other refusal: no oracle
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            logger.error("Push for %s timed out after %ss (run.timeoutPush)", source, timeout)
            result = _empty_result(
                f"push for {source}: expected to finish within run.timeoutPush {timeout}s, "
                "got a timeout"
            )
        return PushReply(500 if result.err else 200, result.to_json())

    # ------------------------------------------------------------------ modes

    async def run_once(self) -> int:
        """``agent run -o``: load, run every source once, no listener.

        Returns:
            0 when every source succeeded, 1 otherwise.
        """
        await self.load()
        results = await self.init_runs()
        failed = sorted(name for name, r in results.items() if r.err)
        for name in failed:
            logger.error("Source %s failed: %s", name, results[name].err)
        return 1 if failed else 0

    async def _start_delay(self) -> None:
        delay = float(self.config.run.randomized_start_delay_sec or 0)
        if delay <= 0:
            return
        seconds = secrets.randbelow(int(delay * 1000)) / 1000
        logger.info("Waiting %.1fs (run.randomizedStartDelaySec) before starting sources", seconds)
        if self._stop_event is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    async def _tick(self, name: str) -> None:
        if self._stopping or name not in self._sources:
            return
        try:
            result = await self.tracked(self.run_source(name))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Source %s: periodic run crashed", name)
            return
        if result.err:
            logger.error("Source %s: periodic run failed: %s", name, result.err)
        if result.exit:
            logger.info("Source %s: exit requested by an event receiver", name)
            self.stop()

    def stop(self) -> None:
        """Ask :meth:`serve` to shut down (signal handlers call this)."""
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    def _schedule(self) -> Any:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        self._scheduler = scheduler
        self._sync_jobs()
        scheduler.start()
        return scheduler

    def _sync_jobs(self) -> None:
        """Make the scheduler's jobs match the sources' ``runFrequency`` (start-up and SIGHUP)."""
        scheduler = self._scheduler
        if scheduler is None:
            return
        wanted: dict[str, float] = {}
        for name in self.source_names:
            freq = float(self.config.sources[name].run_frequency or 0)
            if freq > 0:
                wanted[f"source:{name}"] = freq
        for job in scheduler.get_jobs():
            if job.id not in wanted or job.trigger.interval.total_seconds() != wanted[job.id]:
                job.remove()
        existing = {job.id for job in scheduler.get_jobs()}
        for job_id, freq in sorted(wanted.items()):
            if job_id in existing:
                continue
            name = job_id.removeprefix("source:")
            scheduler.add_job(
                self._tick,
                "interval",
                seconds=freq,
                args=[name],
                id=job_id,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=max(1, int(freq)),
            )
            logger.info("Source %s: running every %ss", name, freq)

    async def reload(self, fresh: Config) -> list[str]:
        """Apply a re-read config (SIGHUP) without disturbing running sources.

        The new config is used by every later run (verify keys, exec, vars, source flags).
        Sources keep their stored token and pattern; added sources are loaded and run once;
        removed sources stop being scheduled. Listener settings need a restart (logged).

        Args:
            fresh: the re-read config.

        Returns:
            The top-level config sections that changed.

        Raises:
            ConfigError: the new config has a token source without a verifier (nothing applied).
        """
        from agent.daemon.state import SourceMeta

        check_verifiers(fresh)
        old, new = self.config.to_dict(), fresh.to_dict()
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if not changed:
            return changed
        listener = (
            "listenAddress",
            "maxBodyBytes",
            "tlsDisable",
            "tlsCertificatePath",
            "tlsCertificateBase64",
            "tlsKeyPath",
            "tlsKeyBase64",
        )
        if any(old["run"].get(k) != new["run"].get(k) for k in listener):
            logger.warning("SIGHUP: listener settings changed; restart the agent to apply them")
        added = sorted(set(fresh.sources) - set(self._sources))
        removed = sorted(set(self._sources) - set(fresh.sources))
        self.config = fresh
        for name in removed:
            del self._sources[name]
            logger.info("SIGHUP: source %s removed", name)
        for name in added:
            self._sources[name] = _SourceRuntime(name, SourceMeta())
            await self._load_source(name)
        for name in sorted(set(self._sources) - set(added)):
            await self.readmit(name)  # a removed or retired key withdraws the pattern now
        self._sync_jobs()
        for name in added:
            logger.info("SIGHUP: source %s added", name)
            result = await self.tracked(self.run_source(name, init=True))
            if result.err:
                logger.error("Source %s failed: %s", name, result.err)
        return changed

    async def _reload(self, loader: Callable[[], Config] | None) -> None:
        from agent.daemon import sdnotify

        if loader is None:
            logger.info("SIGHUP: no config loader; ignoring")
            return
        sdnotify.reloading()
        try:
            fresh = await asyncio.to_thread(loader)
            changed = await self.reload(fresh)
        except AgentError as exc:
            logger.error("SIGHUP: config not reloaded: %s", exc)
            return
        finally:
            sdnotify.ready()
        if changed:
            logger.info("SIGHUP: config sections changed: %s", ", ".join(changed))
        else:
            logger.info("SIGHUP: config unchanged")

    async def serve(
        self,
        *,
        config_loader: Callable[[], Config] | None = None,
        app_hook: Callable[[Daemon], Mapping[str, Any]] | None = None,
    ) -> int:
        """Run the daemon until SIGTERM/SIGINT: load, start-up runs, listener, schedules.

        Args:
            config_loader: re-reads the config on SIGHUP (applied to later runs; see module doc).
            app_hook: returns extra :func:`agent.daemon.server.create_app` keyword arguments
                (``extra_routes``, ``fallback``, ``middlewares``) for other features.

        Returns:
            0 after a clean stop.

        Raises:
            ConfigError: a source has no verifier, or the listen address is invalid.
            SourceError: the listener could not be started.
        """
        from agent.daemon import sdnotify

        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: self._track_task(loop.create_task(self._reload(config_loader)))
        )
        runner: Any = None
        scheduler: Any = None
        try:
            await self.load()
            await self._start_delay()
            if not self._stopping:
                init = loop.create_task(self.init_runs())
                stop_wait = loop.create_task(self._stop_event.wait())
                await asyncio.wait({init, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
            if not self._stopping:
                runner = await self._start_listener(app_hook)
                sdnotify.ready()
                sdnotify.status(f"running {len(self._sources)} source(s)")
                scheduler = self._schedule()
                watchdog = loop.create_task(self._watchdog())
                await self._stop_event.wait()
                watchdog.cancel()
            logger.info("Stopping: no new requests; waiting for running sources")
            sdnotify.stopping()
            if scheduler is not None:
                scheduler.shutdown(wait=False)
            if runner is not None:
                for site in list(runner.sites):
                    await site.stop()
            await self._drain(SHUTDOWN_GRACE_SECONDS)
        finally:
            if runner is not None:
                await runner.cleanup()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        logger.info("Stopped")
        return 0

    async def _watchdog(self) -> None:
        from agent.daemon import sdnotify

        interval = sdnotify.watchdog_interval()
        if interval is None:
            return
        while True:
            sdnotify.watchdog()
            await asyncio.sleep(interval)

    def _on_signal(self, sig: signal.Signals) -> None:
        logger.info("Received %s", sig.name)
        self.stop()

    async def _drain(self, grace: float) -> None:
        pending = {t for t in self._inflight if not t.done()}
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=grace)
        if still:
            logger.error(
                "%d run(s) still going after %ss; cancelling them (their state is not saved)",
                len(still),
                grace,
            )
            for task in still:
                task.cancel()
            await asyncio.wait(still, timeout=5)

    async def _start_listener(self, app_hook: Callable[[Daemon], Mapping[str, Any]] | None) -> Any:
        from agent.daemon.listener import ListenerLimits, start_listener
        from agent.daemon.server import create_app

        run = self.config.run
        if not run.listen_address:
            logger.info("run.listenAddress is empty: not listening")
            return None
        host, port = parse_listen_address(run.listen_address)
        extra: Mapping[str, Any] = app_hook(self) if app_hook else {}
        limits = ListenerLimits.from_run(run)
        app = create_app(
            self,
            max_token_bytes=int(run.max_token_bytes),
            max_body_bytes=int(run.max_body_bytes),
            timeout_body=limits.timeout_body or None,
            **extra,
        )
        ssl_ctx = None if run.tls_disable else await asyncio.to_thread(_listener_ssl, self.config)
        refused = getattr(self.metrics, "connection_refused", None)
        try:
            runner = await start_listener(
                app,
                host,
                port,
                limits=limits,
                ssl_context=ssl_ctx,
                on_refused=refused if callable(refused) else None,
            )
        except OSError as exc:
            raise SourceError(
                f"run.listenAddress {run.listen_address}: expected to listen, got {exc.strerror}"
            ) from exc
        logger.info(
            "Starting listener on %s (%s)",
            run.listen_address,
            "http" if ssl_ctx is None else "https",
        )
        return runner


def run_daemon(
    config: Config,
    *,
    once: bool = False,
    config_loader: Callable[[], Config] | None = None,
    disable_external: bool = False,
) -> int:
    """Entry point for ``agent run`` (blocking).

    Args:
        config: the loaded config.
        once: ``-o``: run every source once and exit (1 if any failed).
        config_loader: re-reads the config on SIGHUP.
        disable_external: disable external Jsonnet natives.

    Returns:
        The exit code.

    Raises:
        ConfigError: a webhook path under ``/etcha`` (and what :meth:`Daemon.serve` raises).
    """
    from agent.daemon.events import Events
    from agent.daemon.httpmw import app_extras
    from agent.daemon.metrics import Metrics
    from agent.daemon.webhooks import check_webhook_paths

    check_webhook_paths(config)
    if once and not config.sources:
        raise ConfigError("agent run -o: no sources configured (expected sources.<name>, got none)")
    check_state_dir(Path(config.run.state_dir or "."))

    async def main() -> int:
        daemon = Daemon(
            config, disable_external=disable_external, events=Events(), metrics=Metrics()
        )
        if once:
            return await daemon.run_once()
        return await daemon.serve(config_loader=config_loader, app_hook=app_extras)

    return asyncio.run(main())


__all__ = [
    "Daemon",
    "EventDispatcher",
    "StoredPattern",
    "check_state_dir",
    "check_verifiers",
    "is_adhoc",
    "parse_listen_address",
    "run_daemon",
    "same_pattern",
]
